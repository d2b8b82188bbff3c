"""Bad arguments are refused at the door: one line `search: error: ...`, exit code 2,
before any work (no usage block, no traceback, no server, no folder made)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search import record
from search.cli import main

SEARCH = Path(sys.executable).parent / "search"


def search(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SEARCH), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def assert_one_line(err: str, *parts: str) -> None:
    assert "Traceback" not in err and "usage:" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("search: error: "), err
    for part in parts:
        assert part in lines[0], (part, err)


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- argument errors: one line, not a usage block -------------------------------------

ARG_ERRORS = [
    pytest.param([], "required: COMMAND", id="no-command"),
    pytest.param(["bogus"], "invalid choice: 'bogus'", id="unknown-command"),
    pytest.param(["run", "--n-trials", "x"], "--n-trials", id="run-not-a-number"),
    pytest.param(["run", "--nope"], "unrecognized arguments: --nope", id="run-unknown-flag"),
    pytest.param(["trials", "--storage"], "--storage: expected one argument", id="no-value"),
    pytest.param(["best", "--top", "0"], "--top: must be >= 1", id="best-top-zero"),
    pytest.param(["promote"], "required: TRIAL", id="promote-no-trial"),
    pytest.param(["promote", "x"], "TRIAL", id="promote-bad-trial"),
    pytest.param(["evaluate", "m", "--device", "tpu"], "--device", id="evaluate-bad-device"),
    pytest.param(["space", "--sample", "-1"], "--sample", id="space-negative-sample"),
]


@pytest.mark.parametrize(("argv", "part"), ARG_ERRORS)
def test_an_argument_error_is_one_line(argv: list[str], part: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, part, "--help")


# -- --study-name: one rule with the study file's [study].name --------------------------

BAD_NAMES = ["../../../x", "a/b", "..", ".hidden", "x" * 101, ""]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("command", [["run"], ["trials"], ["best"], ["report"], ["dashboard"],
                                     ["promote", "0"]])
def test_a_study_name_that_is_a_path_is_refused(command: list[str], name: str, in_tmp: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([*command, "--study-name", name]) == 2
    assert_one_line(capsys.readouterr().err, "--study-name", "letters, digits")
    assert list(in_tmp.iterdir()) == []  # no runs/ folder, nothing outside it either


def test_reading_commands_find_a_study_by_study_name(in_tmp: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = in_tmp / "runs" / "other-name" / "study.db"
    store.parent.mkdir(parents=True)
    optuna.create_study(study_name="other-name", storage=f"sqlite:///{store}",
                        directions=["maximize", "minimize"])
    capsys.readouterr()
    for command in ("trials", "best"):
        code = exit_code([command, "--study", "smoke", "--study-name", "other-name"])
        out, err = capsys.readouterr()
        if command == "trials":
            assert (code, err, out.splitlines()) == (0, "", [record.HEADER])
        else:  # the store was found: the study just has no trial yet
            assert code == 2
            assert_one_line(err, "no complete trial")
    # the dashboard looks in runs/<--study-name>/ too (and finds no store there)
    port = str(free_port())
    assert exit_code(["dashboard", "--study-name", "missing-name", "--port", port]) == 2
    assert_one_line(capsys.readouterr().err, str(in_tmp / "runs" / "missing-name"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- --device cuda on a machine without a GPU --------------------------------------------


@pytest.mark.parametrize("argv", [
    pytest.param(["run", "--study", "smoke", "--n-trials", "1", "--executor", "local",
                  "--data", "nodata"], id="run"),
    pytest.param(["promote", "0", "--study", "smoke"], id="promote"),
    pytest.param(["evaluate", "no-such-run"], id="evaluate"),
])
def test_device_cuda_without_a_gpu_is_one_line(argv: list[str], tmp_path: Path) -> None:
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, also on a machine that has some.
    proc = search(*argv, "--device", "cuda", cwd=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "--device cuda: no CUDA GPU is visible")
    assert list(tmp_path.iterdir()) == []


# -- dashboard: the address must be one it can listen on ---------------------------------


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A real store, so that without the checks the dashboard would reach its server."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=url)
    return url


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize(("port", "part"), [
    ("0", "--port: must be >= 1"), ("65536", "--port: must be <= 65535"),
    ("-5", "--port: must be >= 1"), ("http", "--port: must be a whole number"),
])
def test_dashboard_port_out_of_range_is_one_line(port: str, part: str, store: str,
                                                 tmp_path: Path) -> None:
    proc = search("dashboard", "--storage", store, "--port", port, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, part)


def test_dashboard_on_a_port_in_use_is_one_line(busy_port: int, store: str,
                                                tmp_path: Path) -> None:
    proc = search("dashboard", "--storage", store, "--port", str(busy_port), cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, f"--port {busy_port}", "Address already in use")


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid", "300.1.1.1"])
def test_dashboard_on_an_unassignable_host_is_one_line(host: str, store: str,
                                                       tmp_path: Path) -> None:
    proc = search("dashboard", "--storage", store, "--host", host, "--port", "8765",
                  cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, f"--host {host}", "cannot listen")
