"""The CI gates: a test whose prerequisite is missing skips, unless CI's variable is set.

Each case runs the real test modules in a pytest subprocess with one prerequisite
pointed somewhere absent (by a plugin loaded before collection), once with the
variable unset (every selected test skips) and once with it set (every selected
test fails or errors, none skips: CI must not pass a suite that tested nothing).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import need_shared_archive

REPO = Path(__file__).resolve().parents[1]
# Imported by the subprocess with -p, before the test modules: breaks one prerequisite.
PLUGIN = '''\
import os
from pathlib import Path

NOWHERE = Path("/nonexistent/search-gate-test")
broken = os.environ["GATE_BREAK"]
if broken == "SEARCH_REQUIRE_SHARED_DATA":
    import tests.conftest
    tests.conftest.SHARED_ARCHIVE = NOWHERE / "cifar10-jpeg.tar.gz"
elif broken == "SEARCH_REQUIRE_POSTGRES":
    import tests.search.conftest
    tests.search.conftest.PG_ADMIN["port"] = int(os.environ["GATE_DEAD_PORT"])
elif broken == "SEARCH_REQUIRE_BROWSER":
    import tests.search.test_browser
    tests.search.test_browser.CHROMIUM = NOWHERE / "chromium"
'''
GATES = {
    "SEARCH_REQUIRE_SHARED_DATA": [
        "tests/search/test_service.py", "tests/search/test_faults.py",
        "tests/search/test_promote.py", "tests/search/test_ray_cluster.py",
        "tests/search/test_executors.py::test_a_registered_executor_runs_a_search_from_the_cli",
        "tests/test_gpu_bench.py::test_quick_cpu_run_writes_every_figure",
        # Its own skip on pg_ctlcluster and root comes before any fixture.
        "--deselect", "tests/search/test_faults.py::test_workers_live_through_a_postgres_restart",
    ],
    "SEARCH_REQUIRE_POSTGRES": [
        "tests/search/test_service.py::test_run_resume_and_list_on_both_stores[postgres]",
        "tests/search/test_faults.py::test_two_commands_on_one_postgres_study",
    ],
    "SEARCH_REQUIRE_BROWSER": ["tests/search/test_browser.py"],
}


def dead_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outcomes(variable: str, required: bool, tmp_path: Path) -> dict[str, int]:
    """Run the gate's tests with its prerequisite broken: counts from the JUnit XML."""
    (tmp_path / "gate_plugin.py").write_text(PLUGIN)
    xml = tmp_path / f"{variable}-{required}.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCH_REQUIRE_")}
    env |= {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
            "GATE_BREAK": variable, "GATE_DEAD_PORT": str(dead_port())}
    if required:
        env[variable] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "gate_plugin", "-p", "no:cacheprovider", "-q",
         f"--junit-xml={xml}", *GATES[variable]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert xml.exists(), result.stdout + result.stderr
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "errors", "failures",
                                                         "skipped")}
    counts["passed"] = counts["tests"] - counts["errors"] - counts["failures"] - counts["skipped"]
    counts["returncode"] = result.returncode
    return counts


@pytest.mark.parametrize("variable", list(GATES))
def test_a_missing_prerequisite_skips_and_fails_when_ci_requires_it(variable: str,
                                                                   tmp_path: Path) -> None:
    if variable != "SEARCH_REQUIRE_SHARED_DATA":
        need_shared_archive()  # those tests need the archive before their own prerequisite
    quiet = outcomes(variable, False, tmp_path)
    assert quiet["tests"] >= 1 and quiet["skipped"] == quiet["tests"], quiet

    required = outcomes(variable, True, tmp_path)
    assert required["tests"] == quiet["tests"], required
    assert required["skipped"] == 0 and required["passed"] == 0, required
    assert required["returncode"] == 1, required
