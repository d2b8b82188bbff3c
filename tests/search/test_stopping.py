"""When to stop: Optuna's regret bound against the accuracy's statistical error, in
`search best`, the run's summary and the live view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search import stopping
from search.cli import main
from search.live import LiveView

SPACE = {"lr": FloatDistribution(0, 1), "block": CategoricalDistribution(["basic", "bottleneck"])}


def accuracy(lr: float, block: str, rng: np.random.Generator) -> float:
    """A smooth accuracy surface with its best at lr 0.6, basic blocks; a little noise."""
    return 0.9 - 0.4 * (lr - 0.6) ** 2 - (0.05 if block == "bottleneck" else 0.0) + float(
        rng.normal(0, 0.002))


def store(tmp_path: Path, lrs: np.ndarray, blocks: list[str], val_size: int = 5000) -> str:
    """A real SQLite study of complete trials, each with its recipe as a run records it."""
    rng = np.random.default_rng(1)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for lr, block in zip(lrs, blocks, strict=True):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=accuracy(float(lr), block, rng),
            params={"lr": float(lr), "block": block}, distributions=SPACE,
            system_attrs={"train": json.dumps({"val_size": val_size, "fold": ""})}))
    return url


def converged(n: int = 80) -> tuple[np.ndarray, list[str]]:
    """30 trials over the whole space, then the rest around its best (as TPE would)."""
    rng = np.random.default_rng(0)
    lrs = np.concatenate([rng.uniform(0, 1, 30), np.clip(rng.normal(0.6, 0.05, n - 30), 0, 1)])
    return lrs, [str(b) for b in rng.choice(["basic", "bottleneck"], 30)] + ["basic"] * (n - 30)


def test_a_search_that_has_found_the_top_is_told_to_stop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = store(tmp_path, *converged())
    assert main(["best", "--study", "s", "--storage", url]) == 0
    out = capsys.readouterr().out
    regret, = (line for line in out.splitlines() if line.startswith("regret   "))
    assert "from a Gaussian process over 80 complete trials" in regret
    assert "on 5,000 validation images: 0.42 points" in regret  # sqrt(.9 * .1 / 5000)
    assert "stop?    the regret bound is within the statistical error" in out
    judged = stopping.verdict(optuna.load_study(study_name="s", storage=url).trials)
    assert judged is not None and judged.stop and judged.bound < judged.error


def test_a_search_that_has_seen_a_corner_of_the_space_is_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 25 trials at small learning rates, where accuracy still climbs: the best is far off.
    rng = np.random.default_rng(2)
    url = store(tmp_path, rng.uniform(0, 0.25, 25), ["bottleneck"] * 25)
    assert main(["best", "--study", "s", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "regret   bound " in out and "stop?" not in out
    judged = stopping.verdict(optuna.load_study(study_name="s", storage=url).trials)
    assert judged is not None and not judged.stop and judged.bound > 5 * judged.error


def test_the_error_is_measured_on_the_trials_validation_images(tmp_path: Path) -> None:
    # The same trials judged on 500 validation images: an error ten times the size's
    # square root larger, and the same bound.
    lrs, blocks = converged()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    big = stopping.verdict(optuna.load_study(study_name="s", storage=store(
        tmp_path / "a", lrs, blocks)).trials)
    small = stopping.verdict(optuna.load_study(study_name="s", storage=store(
        tmp_path / "b", lrs, blocks, val_size=500)).trials)
    assert big is not None and small is not None
    assert small.val_images == 500 and small.error == pytest.approx(big.error * 10 ** 0.5)
    assert small.bound == pytest.approx(big.bound)


def test_too_few_trials_no_split_or_no_scipy_give_no_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lrs, blocks = converged()
    trials = optuna.load_study(study_name="s", storage=store(tmp_path, lrs, blocks)).trials
    assert stopping.verdict(trials[:stopping.MIN_TRIALS - 1]) is None
    assert stopping.verdict(trials[:stopping.MIN_TRIALS]) is not None
    for trial in trials:  # a final recipe: no validation split, so no error to compare with
        trial.system_attrs["train"] = json.dumps({"val_size": 0, "fold": ""})
    assert stopping.verdict(trials) is None
    for trial in trials:  # fold 2 of 5 of a 10,000-image subset: 2,000 held out
        trial.system_attrs["train"] = json.dumps({"val_size": 5000, "fold": "2/5",
                                                  "train_subset": 10_000})
    assert stopping.validation_images(trials[0]) == 2000
    monkeypatch.setattr(stopping, "available", lambda: False)
    assert stopping.verdict(trials) is None
    assert not any(line.startswith("regret") for line in stopping.lines(trials))


def test_the_live_view_shows_the_bound_and_the_verdict(tmp_path: Path) -> None:
    study = optuna.load_study(study_name="s", storage=store(tmp_path, *converged()))
    log = io.StringIO()
    view = LiveView(study, 80, out=log)
    view.update()
    lines = log.getvalue().splitlines()
    assert len(lines) == 80
    judged = stopping.verdict(study.trials)
    assert judged is not None
    assert all(line.endswith(f", regret <= {100 * judged.bound:.2f} pts (within the error, "
                             f"{100 * judged.error:.2f}): stop?") for line in lines)
