"""The stopping hint: `search best` and the run's summary say when a search has stalled."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search import record
from search.cli import main


def trials_with(values: list[float]) -> list[optuna.trial.FrozenTrial]:
    made = [create_trial(state=TrialState.COMPLETE, value=v, params={"x": v},
                         distributions={"x": FloatDistribution(0, 1)}) for v in values]
    for number, trial in enumerate(made):
        trial.number = number
    return made


def test_a_stalled_search_gets_a_hint_and_an_improving_one_none() -> None:
    stalled = [0.5 + 0.01 * i for i in range(10)] + [0.55] * 30  # best at trial 9: 0.59
    assert "last 20 complete trials" in (record.plateau(trials_with(stalled)) or "")
    improving = [0.5 + 0.005 * i for i in range(40)]
    assert record.plateau(trials_with(improving)) is None
    assert record.plateau(trials_with(stalled[:29])) is None  # too few to judge
    # An improvement of less than 0.1 points is no improvement.
    tiny = stalled[:10] + [0.55] * 29 + [0.5905]
    assert record.plateau(trials_with(tiny)) is not None
    assert record.plateau(trials_with(stalled[:10] + [0.55] * 29 + [0.592])) is None
    # The window is the last third once there are more than 60 trials.
    long = [0.5 + 0.01 * i for i in range(10)] + [0.55] * 80
    assert "last 30 complete trials" in (record.plateau(trials_with(long)) or "")


def test_search_best_prints_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'stalled.db'}"
    study = optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    for trial in trials_with([0.5 + 0.01 * i for i in range(10)] + [0.55] * 30):
        study.add_trial(trial)
    assert main(["best", "--study", "smoke", "--storage", url]) == 0
    assert "stop?    no improvement over 0.1 points of val_acc" in capsys.readouterr().out
