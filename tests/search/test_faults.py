"""Faults done for real: kill -9 of workers, the driver and promote, a Postgres restart,
a truncated checkpoint, NaN and out-of-memory trials, two commands on one study.

The commands run with short heartbeat, grace and poll periods (the environment knobs
of `search.storage` and `search.executors.base`), so that a dead worker's trial is
found in seconds rather than half a minute; what happens is the same.

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

from search.executors.base import POLL_ENV
from search.record import finished
from search.storage import GRACE_ENV, HEARTBEAT_ENV
from search.worker import POLL_S
from tests.conftest import SHARED_ARCHIVE, missing
from tests.search.conftest import PG_ADMIN
from tests.search.test_service import smoke_file

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it
REPO = Path(__file__).resolve().parents[2]
SEARCH = Path(sys.executable).parent / "search"
HEARTBEAT_S, GRACE_S = 1.0, 4.0  # the commands' heartbeat and grace periods (30 s by default)
ENV = {**os.environ, "PYTHONPATH": str(REPO), HEARTBEAT_ENV: str(HEARTBEAT_S),
       GRACE_ENV: str(GRACE_S), POLL_ENV: "0.5"}
FIGURES: dict[str, Any] = {}
DOWN_S = 5.0  # seconds the Postgres server stays stopped: many heartbeats, under the grace
PG_GRACE_S = 8.0  # the restart test's grace period, longer than the outage
# One training step per epoch: these tests need trials that run, not that learn.
SMALL = {"train_subset = 3000 ": "train_subset = 256 ", "val_size = 1000": "val_size = 100"}


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


def start(command: list[str], cwd: Path, env: dict[str, str] = ENV) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env, start_new_session=True)


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
    study = smoke_file(tmp_path, **SMALL)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = start(search_command(study, url, 2, "--executor", executor, "--no-baselines",
                                "--trainer", "tests.search.trainers:slow"), tmp_path)
    victim = wait_for("a trial to train", lambda: running_with_epochs("smoke", url), proc)
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    killed_at = time.time()
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, out + err
    trials = assert_study_whole("smoke", url, 2)  # the victim's retry and one more
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
        "finished": sum(finished(t) for t in trials), "requested": 2}


def test_a_killed_driver_resumes_with_the_same_command(tmp_path: Path) -> None:
    study = smoke_file(tmp_path, **SMALL)
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


def pg_is_up() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
                          timeout=30).returncode == 0


def need_pg_ctl() -> str:
    """The cluster version to stop and start; a skip without the tools (a failure where CI
    requires Postgres or the shared data: this test is the only one of the outage)."""
    tools = all(shutil.which(t) for t in ("pg_ctlcluster", "pg_isready"))
    if not (tools and os.geteuid() == 0 and os.path.isdir("/etc/postgresql")):
        reason = "stopping the Postgres server needs pg_ctlcluster and pg_isready, as root"
        for variable in ("SEARCH_REQUIRE_POSTGRES", "SEARCH_REQUIRE_SHARED_DATA"):
            if os.environ.get(variable, "") not in ("", "0"):
                missing(reason, variable)
        missing(reason, "SEARCH_REQUIRE_POSTGRES")
    return sorted(os.listdir("/etc/postgresql"))[-1]


def test_workers_live_through_a_postgres_restart(postgres_url: str, tmp_path: Path) -> None:
    version = need_pg_ctl()
    study = smoke_file(tmp_path, **SMALL)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    # A grace period longer than the outage: a trial that is still training when the
    # server is back keeps going, one the outage broke is failed by its heartbeat.
    env = {**ENV, GRACE_ENV: str(PG_GRACE_S)}
    proc = start(search_command(study, postgres_url, 4, "--executor", "local", "--study-name",
                                name, "--no-baselines", "--trainer",
                                "tests.search.trainers:slow"), tmp_path, env)
    wait_for("a trial to train", lambda: running_with_epochs(name, postgres_url), proc)

    def pg(action: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                       check=True, capture_output=True, timeout=120)

    # Down long enough that the training trial's heartbeats and next report, and the
    # other calls of the worker and the driver, meet a dead server.
    t0 = time.monotonic()
    pg("stop")
    try:
        down_seen = 0  # looks that found the server down while the search ran
        while time.monotonic() - t0 < DOWN_S:
            down_seen += proc.poll() is None and not pg_is_up()
            time.sleep(0.5)
    finally:
        pg("start")
    restart_s = time.monotonic() - t0
    wait_for("the server to answer again", pg_is_up, timeout=60)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert down_seen >= 3, "the server was not seen down while the search ran"
    # The outage was met: a worker's call failed, or a heartbeat was missed.
    retries, missed = err.count("store unreachable"), err.count("missed (")
    assert retries + missed > 0, err
    trials = assert_study_whole(name, postgres_url, 4)
    FIGURES["postgres_restart"] = {
        "server_down_seconds": round(restart_s, 1), "finished": sum(finished(t) for t in trials),
        "requested": 4, "failed_by_heartbeat": sum(
            t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs for t in trials),
        "store_retries_logged": retries, "heartbeats_missed": missed,
        "grace_s": PG_GRACE_S}


def test_nan_and_out_of_memory_trials_fail_with_reasons_and_the_study_goes_on(
        tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    store.enqueue_trial({"block_type": "bottleneck", "stem_width": 8})  # NaN
    store.enqueue_trial({"block_type": "bottleneck", "stem_width": 16})  # out of memory
    store.enqueue_trial({"block_type": "basic"})  # trains
    result = subprocess.run(search_command(study, url, 3, "--executor", "local",
                                           "--trainer", "tests.search.trainers:nan_or_oom"),
                            capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = assert_study_whole("smoke", url, 3)  # the third trains after the two faults
    nan, oom = trials[0], trials[1]
    assert nan.state == TrialState.FAIL and nan.user_attrs["fail_reason"].startswith(
        "TrainingDiverged: training diverged: loss is NaN or infinite at epoch ")
    assert oom.state == TrialState.FAIL and oom.user_attrs["fail_reason"].startswith(
        "OutOfMemoryError: CUDA out of memory")
    assert 1 in oom.intermediate_values  # the epoch before the fault is kept
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)
    FIGURES["nan_and_oom"] = {"fail_reasons": [nan.user_attrs["fail_reason"],
                                               oom.user_attrs["fail_reason"]],
                              "finished": 3, "requested": 3}


@pytest.fixture
def new_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of its own, without Optuna's tables yet, as a first `search run` meets."""
    import psycopg2

    name = f"search_new_{uuid.uuid4().hex[:12]}"

    def admin(sql: str) -> None:
        conn = psycopg2.connect(**PG_ADMIN, connect_timeout=30)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_commands_on_one_postgres_study(new_postgres_url: str, tmp_path: Path) -> None:
    # A new database: both commands make Optuna's tables at once (one used to fail).
    postgres_url = new_postgres_url
    study = smoke_file(tmp_path, **SMALL)
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
            epochs = json.loads(t.system_attrs["train"])["epochs"]
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
                "--data", str(SHARED_ARCHIVE), "--device", "cpu", "--checkpoint-every", "1",
                "--out", str(out)]

    def saved_epoch(run: Path) -> int:
        """The epoch of ``run``'s latest checkpoint; 0 while there is none."""
        import torch

        try:
            return int(torch.load(run / "checkpoint.pt", weights_only=True)["epoch"])
        except FileNotFoundError:
            return 0

    straight = tmp_path / "straight"
    subprocess.run(promote(straight), check=True, capture_output=True, env=ENV, timeout=300)
    figures: dict[str, Any] = {}
    for case in ("kill", "kill+truncate"):
        run = tmp_path / case
        proc = start(promote(run), tmp_path)
        # Both checkpoints exist from epoch 2 on; kill -9 in the middle of a later epoch.
        # Waited on (and the epoch read from) the checkpoint, which is what a resume finds;
        # metrics.csv is written after it and may lag behind, never run ahead.
        wait_for("the checkpoint of epoch 2", lambda: saved_epoch(run) >= 2, proc)  # noqa: B023
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        epoch = saved_epoch(run)
        assert epoch >= 2 and len(read_rows(run)) in (epoch, epoch - 1)
        # The killed run's lock file names it, and blocks nobody: the kernel dropped the lock.
        assert json.loads((run / "promote.lock").read_text())["pid"] == proc.pid
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
