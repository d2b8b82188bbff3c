"""`search run --ray-address`: a real Ray head started with `ray start --head`, token auth on."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.record import finished
from tests.conftest import SHARED_ARCHIVE
from tests.search.test_service import smoke_file

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env(token_file: Path) -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, Path]]:
    """A one-node cluster on loopback with its own token and temp folder; stopped after."""
    # Ray's socket paths must stay short, so not pytest's long tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
         f"--temp-dir={folder / 'ray'}", "--block"],
        env=ray_env(token), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(BIN / "ray"), "status", f"--address={address}"],
                             env=ray_env(token), capture_output=True).returncode != 0:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(1)
        yield address, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:  # what the head started and did not stop in time
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def search(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "search"), *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=400)


def test_search_runs_on_a_ray_cluster_it_joins(ray_head: tuple[str, Path],
                                               tmp_path: Path) -> None:
    address, token = ray_head
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["run", "--study", str(study), "--storage", url, "--study-name", "cluster",
            "--n-trials", "2", "--ray-address", address, "--data", str(SHARED_ARCHIVE),
            "--device", "cpu"]
    result = search(argv, ray_env(token), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on Ray cluster at {address}" in result.stdout
    trials = optuna.load_study(study_name="cluster", storage=url).trials
    assert sum(finished(t) for t in trials) == 2


def test_a_wrong_token_is_refused_with_exit_2(ray_head: tuple[str, Path],
                                              tmp_path: Path) -> None:
    address, _ = ray_head
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    study = smoke_file(tmp_path)
    result = search(["run", "--study", str(study), "--storage",
                     f"sqlite:///{tmp_path / 'study.db'}", "--n-trials", "1", "--ray-address",
                     address, "--data", str(SHARED_ARCHIVE)], ray_env(wrong), tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("search: error: cannot join the Ray cluster at " + address)
    assert "RAY_AUTH_TOKEN_PATH" in last
    assert "Traceback" not in result.stderr
