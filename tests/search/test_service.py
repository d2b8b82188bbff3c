"""`search run` end to end: both stores, both executors, resume, failures, Ctrl-C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from importlib import resources
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.record import finished
from search.run import RunOptions, run_search
from search.storage import mask_url
from tests.conftest import SHARED_ARCHIVE
from tests.search import trainers

REPO = Path(__file__).resolve().parents[2]
SEARCH = Path(sys.executable).parent / "search"

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it


def smoke_file(tmp_path: Path, **changes: str) -> Path:
    """The built-in smoke study on fewer images, with ``changes`` to its lines."""
    text = resources.files("space").joinpath("studies").joinpath("smoke.toml").read_text()
    lines = {"train_subset = 3000 ": "train_subset = 600 ", "val_size = 1000": "val_size = 200",
             **changes}
    for old, new in lines.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "smoke.toml"
    path.write_text(text)
    return path


def trials_of(name: str, url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def run(study: Path, url: str, name: str, n: int, **kwargs: object) -> tuple[int, str]:
    out = io.StringIO()
    options = dict(study=str(study), storage=url, study_name=name, n_trials=n, workers=1,
                   executor="local", data=str(SHARED_ARCHIVE), device="cpu", seed=0,
                   log_dir=str(study.parent / "logs"))
    options.update(kwargs)
    code = run_search(RunOptions(**options), out)  # type: ignore[arg-type]
    return code, out.getvalue()


# One training step per epoch, for tests whose trials need to run, not to learn.
ONE_STEP = {"train_subset = 3000 ": "train_subset = 256 ", "val_size = 1000": "val_size = 100"}


def test_run_resume_and_list_on_both_stores(storage_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    study = smoke_file(tmp_path, **ONE_STEP)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    code, out = run(study, storage_url, name, 3)
    assert code == 0, out
    first = trials_of(name, storage_url)
    assert [t.number for t in first] == [0, 1, 2]
    assert first[0].user_attrs["baseline"] == "resnet-8-half"
    assert sum(finished(t) for t in first) == 3

    code, out = run(study, storage_url, name, 5)  # the same command, a larger total
    assert code == 0, out
    assert "3 of 5 finished already" in out
    trials = trials_of(name, storage_url)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert sum(finished(t) for t in trials) == 5
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for t in trials:
        if t.state == TrialState.COMPLETE:
            for key in ("n_params", "flops", "arch_summary", "seconds_per_epoch",
                        "images_per_s", "device", "host", "data_source"):
                assert key in t.user_attrs, key
            assert {"arch", "train"} <= set(t.system_attrs)  # the configs' JSON

    capsys.readouterr()
    assert main(["trials", "--study", name, "--storage", storage_url]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 1 + 5
    assert main(["best", "--study", name, "--storage", storage_url, "--top", "1"]) == 0
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value or 0.0)
    assert capsys.readouterr().out.splitlines()[1].split()[0] == str(best.number)


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_smoke_search_with_two_workers(executor: str, tmp_path: Path) -> None:
    # A tight budget, wide widths and a plain random sampler: about half the proposals are
    # over the budget (measured with `search space --sample 300 --sampler random`).
    study = smoke_file(tmp_path, **{
        "budget = 40_000 ": "budget = 20_000 ",
        "width = [8, 16, 24, 32]": "width = [8, 16, 32, 64]",
        'type = "tpe"\nn_startup_trials = 4': 'type = "random"\nbudget_aware = false'})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = subprocess.run(
        [str(SEARCH), "run", "--study", str(study), "--storage", url, "--n-trials", "8",
         "--workers", "2", "--executor", executor, "--data", str(SHARED_ARCHIVE),
         "--device", "cpu", "--seed", "0"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    trials = trials_of("smoke", url)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states
    assert sum(finished(t) for t in trials) == 8  # the start lock: no worker overshoots
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states
    assert trials[0].user_attrs.get("baseline") == "resnet-8-half"
    assert trials[0].state == TrialState.COMPLETE
    rejected = [t for t in trials if "rejected_reason" in t.user_attrs]
    assert rejected, "the tight budget should reject some proposals"
    for t in rejected:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["n_params"] > 20_000
        # Nothing trained: no epoch reported, no training attributes set.
        assert not t.intermediate_values and "flops" not in t.user_attrs
    assert len({t.user_attrs.get("worker") for t in trials if "worker" in t.user_attrs}) == 2


def test_a_failing_trial_is_fail_and_the_study_goes_on(tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code, out = run(study, url, "fails", 6, baselines=False,
                    trainer=trainers.diverge_above_lr)
    assert code == 0, out
    trials = trials_of("fails", url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and any(t.state == TrialState.COMPLETE for t in trials)
    for t in failed:
        assert t.user_attrs["fail_reason"].startswith("TrainingDiverged: training diverged")
    assert sum(finished(t) for t in trials) == 6


def test_a_bug_in_the_trainer_stops_the_search_after_three_trials(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    logs = tmp_path / "logs"
    code, out = run(study, url, "bug", 6, baselines=False, trainer=trainers.buggy,
                    log_dir=str(logs))
    err = capfd.readouterr().err
    assert code == 1, out
    assert str(logs) in err and "3 trials in a row failed with an error in the code" in err
    trials = trials_of("bug", url)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    for t in trials:  # not the trial's own failure: not counted, and the trace is findable
        assert "fail_reason" not in t.user_attrs and not finished(t)
        assert t.user_attrs["error"].startswith("ValueError: a bug in the trainer")
        assert str(logs / "worker-0.log") in t.user_attrs["error"]
    log = (logs / "worker-0.log").read_text()
    assert log.count("Traceback (most recent call last)") == 3
    assert "in buggy" in log and "shapes (3, 4) and (5, 6) do not match" in log


def test_a_data_error_is_the_trials_own_failure_and_counts(tmp_path: Path) -> None:
    study = smoke_file(tmp_path, **{"stem_width = [8, 16]": "stem_width = [8]"})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code, out = run(study, url, "data", 3, baselines=False, trainer=trainers.bad_data_then_fit)
    assert code == 0, out
    trials = trials_of("data", url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, [t.state for t in trials]
    for t in failed:
        assert t.user_attrs["fail_reason"] == "DataError: train/cat/17.jpg: unreadable image"
    assert sum(finished(t) for t in trials) == 3


def test_ctrl_c_leaves_no_trial_running_and_the_same_command_continues(tmp_path: Path) -> None:
    study = smoke_file(tmp_path, **ONE_STEP)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = [str(SEARCH), "run", "--study", str(study), "--storage", url, "--n-trials", "3",
               "--executor", "local", "--data", str(SHARED_ARCHIVE), "--device", "cpu",
               "--no-baselines", "--trainer", "tests.search.trainers:slow"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            if any(t.state == TrialState.RUNNING and t.intermediate_values
                   for t in trials_of("smoke", url)):
                break
        except Exception:  # the study may not exist yet
            continue
    else:
        proc.kill()
        pytest.fail("no trial started")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    assert not [t for t in trials_of("smoke", url) if t.state == TrialState.RUNNING]

    again = subprocess.run(command[:-2], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = trials_of("smoke", url)
    assert sum(finished(t) for t in trials) == 3
    assert len({t.number for t in trials}) == len(trials)


def test_passwords_are_masked_and_bad_stores_exit_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert "hunter2" not in mask_url("postgresql+psycopg2://me:hunter2@db.example/search")
    code = main(["run", "--study", "smoke", "--storage",
                 "postgresql+psycopg2://me:hunter2@127.0.0.1:1/nowhere",
                 "--data", str(SHARED_ARCHIVE), "--n-trials", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "hunter2" not in err and "***" in err
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="other", storage=url)
    assert main(["trials", "--study", "nope", "--storage", url]) == 2
    assert "studies there: other" in capsys.readouterr().err


def test_dashboard_serves_the_store_on_loopback(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(study_name="shown", storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(SEARCH), "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the dashboard did not come up")
                time.sleep(0.5)
        assert [s["study_name"] for s in body["study_summaries"]] == ["shown"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"at http://127.0.0.1:{port}/" in out


def test_four_racing_workers_stop_exactly_at_n_trials(storage_url: str, tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    name = f"race-{uuid.uuid4().hex[:8]}"
    code, out = run(study, storage_url, name, 20, workers=4, baselines=False,
                    trainer=trainers.instant)
    assert code == 0, out
    trials = trials_of(name, storage_url)
    assert sum(finished(t) for t in trials) == 20
    assert len(trials) == 20
    assert len({t.user_attrs.get("worker") for t in trials} - {None}) >= 2
