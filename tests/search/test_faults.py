"""Faults done for real: kill -9 of workers, the driver and promote, a Postgres restart,
a truncated checkpoint, NaN and out-of-memory trials, two commands on one study.

Measured figures go to the JSON file named by $SEARCH_RELIABILITY_REPORT, if set
(docs/reliability.md quotes them).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.record import finished
from search.storage import GRACE_S
from search.worker import POLL_S
from tests.conftest import SHARED_ARCHIVE
from tests.search.test_service import smoke_file

pytestmark = pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="needs the shared archive")
REPO = Path(__file__).resolve().parents[2]
SEARCH = Path(sys.executable).parent / "search"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
FIGURES: dict[str, Any] = {}
DOWN_S = 12.0  # seconds the Postgres server stays stopped


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    yield
    target = os.environ.get("SEARCH_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    print("\nreliability figures:", json.dumps(FIGURES, indent=2, sort_keys=True))


def trials_of(name: str, url: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[str] | None = None,
             timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # the store may not exist yet, or be restarting
            found = None
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {proc.communicate()}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def search_command(study: Path, url: str, n: int, *extra: str) -> list[str]:
    return [str(SEARCH), "run", "--study", str(study), "--storage", url, "--n-trials", str(n),
            "--data", str(SHARED_ARCHIVE), "--device", "cpu", "--seed", "0", *extra]


def start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=ENV, start_new_session=True)


def running_with_epochs(name: str, url: str) -> FrozenTrial | None:
    return next((t for t in trials_of(name, url)
                 if t.state == TrialState.RUNNING and t.intermediate_values), None)


def assert_study_whole(name: str, url: str, n: int) -> list[FrozenTrial]:
    trials = trials_of(name, url)
    assert sum(finished(t) for t in trials) == n
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    return trials


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_killed_worker_trial_fails_and_is_retried(executor: str, tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = start(search_command(study, url, 3, "--executor", executor, "--no-baselines",
                                "--trainer", "tests.search.trainers:slow"), tmp_path)
    victim = wait_for("a trial to train", lambda: running_with_epochs("smoke", url), proc)
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    killed_at = time.time()
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, out + err
    trials = assert_study_whole("smoke", url, 3)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and "fail_reason" not in dead.user_attrs
    assert dead.datetime_complete is not None
    detect = dead.datetime_complete.timestamp() - killed_at
    assert detect <= GRACE_S + 2 * POLL_S + 15, detect
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].params == dead.params and finished(retry[0])
    if executor == "local":
        assert "was killed by SIGKILL; starting it again" in err
    FIGURES[f"kill_worker_{executor}"] = {
        "seconds_to_fail_dead_trial": round(detect, 1), "grace_s": GRACE_S,
        "finished_trials_lost": 0, "retried_trial": retry[0].number,
        "finished": sum(finished(t) for t in trials), "requested": 3}


def test_a_killed_driver_resumes_with_the_same_command(tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = search_command(study, url, 4, "--executor", "local", "--trainer",
                             "tests.search.trainers:slow")
    proc = start(command, tmp_path)
    wait_for("a complete trial and a training one", lambda: [
        t for t in trials_of("smoke", url) if t.state == TrialState.COMPLETE]
        and running_with_epochs("smoke", url), proc)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
    proc.communicate(timeout=60)
    before = sum(finished(t) for t in trials_of("smoke", url))
    started = time.monotonic()
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=ENV,
                           timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = assert_study_whole("smoke", url, 4)
    assert trials[0].user_attrs.get("baseline") == "resnet-8-half"
    assert sum("baseline" in t.user_attrs for t in trials) == 1  # queued once, not again
    FIGURES["kill_driver"] = {"finished_before_rerun": before, "requested": 4,
                              "finished": sum(finished(t) for t in trials),
                              "rerun_seconds": round(time.monotonic() - started, 1),
                              "trial_numbers_unique": True}


@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None or os.geteuid() != 0,
                    reason="stopping the Postgres server needs pg_ctlcluster as root")
def test_workers_live_through_a_postgres_restart(postgres_url: str, tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    proc = start(search_command(study, postgres_url, 4, "--executor", "local", "--study-name",
                                name, "--no-baselines", "--trainer",
                                "tests.search.trainers:slow"), tmp_path)
    wait_for("a trial to train", lambda: running_with_epochs(name, postgres_url), proc)
    version = sorted(os.listdir("/etc/postgresql"))[-1]

    def pg(action: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                       check=True, capture_output=True, timeout=120)

    # Down long enough that the training trial's next report, and the other calls
    # of the worker and the driver, meet a dead server.
    t0 = time.monotonic()
    pg("stop")
    try:
        time.sleep(DOWN_S)
    finally:
        pg("start")
    restart_s = time.monotonic() - t0
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    trials = assert_study_whole(name, postgres_url, 4)
    FIGURES["postgres_restart"] = {
        "server_down_seconds": round(restart_s, 1), "finished": sum(finished(t) for t in trials),
        "requested": 4, "failed_by_heartbeat": sum(
            t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs for t in trials),
        "store_retries_logged": err.count("store unreachable")}


def test_nan_and_out_of_memory_trials_fail_with_reasons_and_the_study_goes_on(
        tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    store.enqueue_trial({"block_type": "bottleneck", "stem_width": 8})  # NaN
    store.enqueue_trial({"block_type": "bottleneck", "stem_width": 16})  # out of memory
    store.enqueue_trial({"block_type": "basic"})  # trains
    result = subprocess.run(search_command(study, url, 4, "--executor", "local",
                                           "--trainer", "tests.search.trainers:nan_or_oom"),
                            capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = assert_study_whole("smoke", url, 4)
    nan, oom = trials[0], trials[1]
    assert nan.state == TrialState.FAIL and nan.user_attrs["fail_reason"].startswith(
        "TrainingDiverged: training diverged: loss is NaN or infinite at epoch ")
    assert oom.state == TrialState.FAIL and oom.user_attrs["fail_reason"].startswith(
        "OutOfMemoryError: CUDA out of memory")
    assert 1 in oom.intermediate_values  # the epoch before the fault is kept
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)
    FIGURES["nan_and_oom"] = {"fail_reasons": [nan.user_attrs["fail_reason"],
                                               oom.user_attrs["fail_reason"]],
                              "finished": 4, "requested": 4}


def test_two_commands_on_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    name = f"twin-{uuid.uuid4().hex[:8]}"
    command = search_command(study, postgres_url, 6, "--executor", "local", "--study-name",
                             name)
    procs = [start(command, tmp_path) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err
    trials = assert_study_whole(name, postgres_url, 6)
    assert sum("baseline" in t.user_attrs for t in trials) == 1
    for t in trials:
        if t.state == TrialState.COMPLETE:
            epochs = json.loads(t.user_attrs["train"])["epochs"]
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1)), t.number
            assert t.value == t.intermediate_values[epochs]
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
    FIGURES["two_commands_one_study"] = {
        "finished": sum(finished(t) for t in trials), "requested": 6,
        "trials": len(trials), "workers_by_pid": len({t.user_attrs.get("pid") for t in trials
                                                      if "pid" in t.user_attrs})}


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in csv.DictReader(f)]


def test_killed_promote_resumes_and_a_truncated_checkpoint_falls_back(tmp_path: Path) -> None:
    study = smoke_file(tmp_path, **{"[final]\nepochs = 2\ntrain_subset = 3000":
                                    "[final]\nepochs = 4\ntrain_subset = 600"})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    subprocess.run(search_command(study, url, 1, "--executor", "local"), check=True,
                   capture_output=True, cwd=tmp_path, env=ENV, timeout=300)

    def promote(out: Path) -> list[str]:
        return [str(SEARCH), "promote", "0", "--study", str(study), "--storage", url,
                "--data", str(SHARED_ARCHIVE), "--device", "cpu", "--out", str(out)]

    straight = tmp_path / "straight"
    subprocess.run(promote(straight), check=True, capture_output=True, env=ENV, timeout=300)
    figures: dict[str, Any] = {}
    for case in ("kill", "kill+truncate"):
        run = tmp_path / case
        proc = start(promote(run), tmp_path)
        # Both checkpoints exist from epoch 2 on; kill -9 in the middle of a later epoch.
        wait_for("two checkpoints", lambda: (run / "checkpoint.prev.pt").exists(), proc)  # noqa: B023
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        epoch = len(list(csv.DictReader((run / "metrics.csv").open())))
        if case == "kill+truncate":
            latest = run / "checkpoint.pt"
            latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
        again = subprocess.run(promote(run), capture_output=True, text=True, env=ENV,
                               timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        if case == "kill":
            assert f"resuming from the checkpoint of epoch {epoch}" in again.stdout
        else:
            assert "unreadable checkpoint" in again.stdout
            assert "falling back to checkpoint.prev.pt" in again.stdout
            assert f"resuming from the checkpoint of epoch {epoch - 1}" in again.stdout
        assert read_rows(run) == read_rows(straight)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["test_acc"] == json.loads((straight / "summary.json").read_text())[
            "test_acc"]
        figures[case] = {"killed_after_epoch": epoch, "resumed_from": summary["resumed_from"],
                         "same_metrics_as_uninterrupted": True}
    FIGURES["kill_promote"] = figures
