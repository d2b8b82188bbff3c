"""`search run` protects the machine and the store: workers capped at what is left and
what the machine holds, SIGTERM and Ctrl-C stop cleanly in one line, a study keeps its
space, a resumed study proposes new candidates, and a space where nothing fits is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.cli import main
from search.executors import local
from search.executors.base import usable_cores
from search.record import finished
from space import load_spec
from tests.conftest import SHARED_ARCHIVE

REPO = Path(__file__).resolve().parents[2]
OLD_STORE = REPO / "tests" / "fixtures" / "release-0.1" / "study.db"
INSTANT = "tests.search.trainers:instant"


@pytest.fixture
def cache(cifar_jpeg: object, cifar_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's decoded data, for this process and the workers it starts."""
    monkeypatch.setenv("SEARCH_CACHE", str(cifar_cache))
    return cifar_cache


def smoke(tmp_path: Path, *, small: bool = True, **changes: str) -> Path:
    """The built-in smoke study (``small``: on fewer images), with ``changes`` to its lines."""
    text = resources.files("space").joinpath("studies").joinpath("smoke.toml").read_text()
    fewer = {"train_subset = 3000 ": "train_subset = 600 ", "val_size = 1000": "val_size = 200"}
    lines = {**(fewer if small else {}), **changes}
    for old, new in lines.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"smoke-{len(list(tmp_path.glob('smoke-*.toml')))}.toml"
    path.write_text(text)
    return path


def run_argv(study: Path | str, url: str, n: int, *extra: str) -> list[str]:
    return ["run", "--study", str(study), "--storage", url, "--n-trials", str(n),
            "--executor", "local", "--data", str(SHARED_ARCHIVE), "--device", "cpu", *extra]


def trials_of(url: str, name: str = "smoke") -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


# -- workers ---------------------------------------------------------------------------


def test_workers_are_capped_at_the_trials_left_and_the_line_says_so(
        tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(run_argv(smoke(tmp_path), url, 1, "--workers", "5", "--no-baselines",
                         "--trainer", INSTANT))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    cores = usable_cores()
    assert (f"workers  5 requested, 1 started (1 trial left, {cores} CPU cores)"
            in out.splitlines()), out
    assert "; 1 worker(s) on this machine" in out
    assert sum(finished(t) for t in trials_of(url)) == 1


def test_local_workers_are_capped_at_the_cores_without_starting_any() -> None:
    cores = usable_cores()
    place = local.LocalExecutor().placement(1000, 1.0, "cpu", trials_left=1000)
    assert place.workers == cores and place.cpu_threads == 1
    assert place.reduced == (f"workers  1000 requested, {cores} started "
                             f"(1000 trials left, {cores} CPU cores)")
    fits = local.LocalExecutor().placement(1, 1.0, "cpu", trials_left=1000)
    assert fits.workers == 1 and fits.reduced == ""


@pytest.mark.parametrize("value", ["-1", "0", "-0.5", "nan", "inf", "9", "x"])
def test_gpus_per_trial_must_be_a_positive_share(capsys: pytest.CaptureFixture[str],
                                                 value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--study", "smoke", "--gpus-per-trial", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"argument --gpus-per-trial: must be (a number|> 0 and <= 8)", err), err


# -- stopping --------------------------------------------------------------------------


def _default_sigint() -> None:
    # A test runner may run with SIGINT ignored (nohup, a CI shell), which a child inherits.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("how", "executor", "code"), [
    ("ctrl-c", "local", 130), ("sigterm", "local", 143),
    # Ray's driver installs its own SIGTERM handler (a stack dump, then death, the
    # trial left RUNNING and the Ray workers training on): `init_ray` must keep ours.
    ("sigterm", "ray", 143)])
def test_sigterm_and_ctrl_c_fail_running_trials_and_say_one_line(
        tmp_path: Path, cache: Path, how: str, executor: str, code: int) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, "-m", "search.cli",
               *run_argv(smoke(tmp_path), url, 3, "--no-baselines", "--trainer",
                         "tests.search.trainers:slow", "--executor", executor)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEARCH_CACHE": str(cache)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300
    while not _training(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no trial started training: {proc.communicate()}")
        time.sleep(0.5)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the driver and its workers
    else:
        os.kill(proc.pid, signal.SIGTERM)  # `kill PID`, a service manager: the driver only
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out + err
    assert "Traceback" not in out + err, err
    word = "interrupted" if how == "ctrl-c" else "terminated"
    assert f"{word}: workers stopped; run the same command to continue" in out
    trials = trials_of(url)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert [t for t in trials if t.state == TrialState.FAIL]


def _training(url: str) -> bool:
    try:
        return any(t.state == TrialState.RUNNING and t.intermediate_values
                   for t in trials_of(url))
    except Exception:  # the store may not exist yet
        return False


# -- the study's space -----------------------------------------------------------------


def test_a_study_keeps_its_space_and_an_old_study_adopts_it(
        tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "old" / "study.db"
    db.parent.mkdir()
    shutil.copyfile(OLD_STORE, db)  # release 0.1's smoke study: no fingerprint
    url = f"sqlite:///{db}"
    argv = ["run", "--study", "smoke", "--storage", url, "--n-trials", "8",
            "--data", str(SHARED_ARCHIVE)]
    assert main(argv) == 0, capsys.readouterr()
    study = optuna.load_study(study_name="smoke", storage=url)
    fingerprint = load_spec("smoke").fingerprint()
    assert study.user_attrs["space_fingerprint"] == fingerprint

    # The file's n_trials and description are no part of the space.
    same = smoke(tmp_path, small=False, **{"n_trials = 8": "n_trials = 20",
                              'description = "Tiny': 'description = "Small'})
    assert main([*argv[:2], str(same), *argv[3:]]) == 0, capsys.readouterr()
    capsys.readouterr()

    other = smoke(tmp_path, small=False, **{"budget = 40_000": "budget = 60_000"})
    assert main([*argv[:2], str(other), *argv[3:]]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("search: error: study 'smoke' was started "
                                                   "with another space or budget"), err
    assert f"fingerprint {fingerprint}, from built-in study 'smoke'" in err
    assert str(other) in err and "--study-name" in err and "--allow-space-change" in err
    assert len(trials_of(url)) == 8

    assert main([*argv[:2], str(other), *argv[3:], "--allow-space-change"]) == 0
    assert "space    changed: " in capsys.readouterr().out
    assert optuna.load_study(study_name="smoke", storage=url).user_attrs[
        "space_fingerprint"] == load_spec(other).fingerprint() != fingerprint


def test_a_resumed_seeded_study_does_not_repeat_proposals(
        tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = smoke(tmp_path)
    for n in (3, 6):  # a run, then the same command continued to more trials
        code = main(run_argv(study, url, n, "--seed", "0", "--workers", "1", "--no-baselines",
                             "--trainer", INSTANT))
        assert code == 0, capsys.readouterr()
    trials = trials_of(url)
    assert sum(finished(t) for t in trials) == 6
    proposals = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(proposals)) == len(proposals), proposals


def test_a_space_where_nothing_fits_the_budget_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = smoke(tmp_path, **{"budget = 40_000": "budget = 500"})
    code = main(run_argv(study, url, 2, "--no-baselines", "--trainer", INSTANT))
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"search: error: {study}: study.budget: no "
                                                   "architecture of the space fits in 500 "
                                                   "parameters; the smallest, "), err
    assert "has 586:" in err  # 2 stages of 1 bottleneck block, widths 8: counted by hand below
    assert not (tmp_path / "study.db").exists()


def test_the_smallest_architecture_is_no_larger_than_any_drawn_one() -> None:
    from models import count_params
    from space.smallest import smallest_arch
    from tests.conftest import RandomSuggester

    for name in ("smoke", "resnet-budget"):
        spec = load_spec(name)
        arch, n_params = smallest_arch(spec.sample_arch, count_params)
        assert n_params == count_params(arch)
        assert spec.arch_params(arch) is not None  # a member of the space
        drawn = min(count_params(spec.sample_arch(RandomSuggester(seed))) for seed in range(300))
        assert n_params <= drawn


def test_a_fitting_draw_is_within_the_limit_and_none_below_the_smallest() -> None:
    # The door's second look before refusing a space: random draws of the whole space.
    from models import count_params
    from space.smallest import fitting_draw, smallest_arch

    spec = load_spec("smoke")
    _, smallest = smallest_arch(spec.sample_arch, count_params)
    limit = 20_000
    found = fitting_draw(spec.sample_arch, count_params, limit)
    assert found is not None and count_params(found) <= limit
    assert spec.arch_params(found) is not None
    assert fitting_draw(spec.sample_arch, count_params, smallest - 1, draws=300) is None


def test_a_space_where_hardly_anything_fits_stops_once_the_sampler_runs_dry(
        tmp_path: Path, cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # 586 parameters: only the space's smallest network fits, about 1 draw in 4,000;
    # the door lets it pass, the sampler's 100 draws a trial do not find it.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = smoke(tmp_path, **{"budget = 40_000": "budget = 586"})
    code = main(run_argv(study, url, 8, "--seed", "0", "--no-baselines", "--trainer", INSTANT))
    out, err = capfd.readouterr()  # the worker writes to its own stderr
    assert code == 1, out + err
    assert "Traceback" not in err
    assert ("the sampler found no architecture within the budget of 586 parameters for 3 "
            "trials in a row: allow smaller networks") in err
    trials = trials_of(url)
    assert len(trials) == 3 and all(t.state == TrialState.PRUNED for t in trials)
