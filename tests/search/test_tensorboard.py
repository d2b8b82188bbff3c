"""``--tensorboard DIR`` on `search run` and `search promote`: the event files of the
session's real smoke search and promoted run (``conftest.py``), read back with
TensorBoard's own event reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from tests.search.smoke import Searched

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)


def events(folder: Path) -> EventAccumulator:
    assert any(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_each_trial_has_its_epochs_and_hyperparameters(searched: Searched) -> None:
    study = optuna.load_study(study_name=searched.name, storage=searched.url)
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    for trial in trials:
        acc = events(searched.root / "tb" / searched.name / f"trial-{trial.number}")
        tags = set(acc.Tags()["scalars"])
        assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr",
                "images_per_s"} <= tags, tags
        # Every epoch the pruner saw, with the value it saw.
        seen = sorted(trial.intermediate_values.items())
        assert [step for step, _ in series(acc, "accuracy/val")] == [s for s, _ in seen]
        for (_, logged), (_, value) in zip(series(acc, "accuracy/val"), seen, strict=True):
            assert logged == pytest.approx(value, abs=1e-6)
        assert len(series(acc, "loss/train")) == len(seen)
        # The HParams plugin's session with the trial's parameters and final metrics.
        assert acc.PluginTagToContent("hparams"), "no hparams data"
        assert series(acc, "hparam/val_acc")[0][1] == pytest.approx(trial.value, abs=1e-6)
        content = b"".join(acc.PluginTagToContent("hparams").values())
        for name in trial.params:
            assert name.encode() in content, (name, trial.number)


def test_promoted_run_has_its_epochs_and_test_accuracy(searched: Searched,
                                                      promoted: Path) -> None:
    acc = events(searched.root / "tb" / searched.name / f"final-{promoted.name}")
    summary = json.loads((promoted / "summary.json").read_text())
    assert [step for step, _ in series(acc, "accuracy/train")] == \
        list(range(1, summary["epochs"] + 1))
    assert series(acc, "hparam/test_acc")[0][1] == pytest.approx(summary["test_acc"], abs=1e-6)
    content = b"".join(acc.PluginTagToContent("hparams").values())
    assert b"arch.stem_width" in content and b"train.lr" in content


def test_without_tensorboard_the_option_is_refused(searched: Searched, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    for argv in (["run", "--study", str(searched.study), "--storage", searched.url,
                  "--study-name", "never", "--tensorboard", str(tmp_path / "tb")],
                 searched.argv(1, "--out", str(tmp_path / "run"), "--tensorboard",
                               str(tmp_path / "tb"))):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--tensorboard needs the tensorboard package" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()
