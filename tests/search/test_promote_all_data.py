"""Final runs on every training image: ``[final] val_size = 0`` in `search promote`, and
``val_size = 0`` refused in ``[train]``, where the pruner needs validation accuracy."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

import trainers.training as training
from search import record
from search.cli import main
from search.results.promote import validation_note
from space import SpecError, load_spec
from tests.search.smoke import SMOKE_FINAL, Searched, smoke_search
from tests.search.test_promote import one_line_error
from tests.search.test_service import smoke_file
from trainers import TrainConfig, rundir
from trainers.rundir import OUTPUTS

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it
# The smoke study's [final] table, as cheap as a promote gets: 400 images, one epoch.
FINAL = """[final]
epochs = 1
train_subset = 400
val_size = 0
batch_size = 64
tta_flip = false"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """A smoke search of one trial (the baseline) whose study file trains on all images."""
    return smoke_search(tmp_path_factory.mktemp("all-data"), "all", FINAL)


@pytest.fixture(scope="module")
def promoted(searched: Searched) -> tuple[Path, str]:
    """Trial 0 promoted on every image, with `evaluate` (per-epoch validation) forbidden;
    the run folder and what promote printed."""
    def no_evaluation(*_: Any, **__: Any) -> tuple[float, float]:
        raise AssertionError("a run without a validation split evaluated one")

    out = searched.root / "trial-0"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(training, "evaluate", no_evaluation)
        code = main(searched.argv(0, "--out", str(out)))
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


def test_promote_on_every_image_writes_every_output(promoted: tuple[Path, str],
                                                    searched: Searched) -> None:
    out, printed = promoted
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert (out / rundir.CURVES).read_bytes().startswith(b"\x89PNG")
    config = rundir.read_config(out)
    assert config["train"]["val_size"] == 0 and config["train"]["train_subset"] == 400
    metrics = rundir.read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1]
    assert math.isnan(metrics[0]["val_acc"]) and math.isnan(metrics[0]["val_loss"])
    assert 0.0 <= metrics[0]["train_acc"] <= 1.0
    lines = printed.splitlines()
    assert any(line.startswith("recipe ") and line.endswith("400 training images, no "
                                                            "validation split") for line in lines)
    epoch = next(line for line in lines if line.startswith("epoch 1/1"))
    assert "train loss" in epoch and "no validation split" in epoch and "nan" not in epoch
    store = optuna.load_study(study_name=searched.name, storage=searched.url)
    summary = rundir.read_summary(out)
    assert store.trials[0].user_attrs[record.PROMOTED_TEST_ACC] == round(summary["test_acc"], 4)


def test_summary_has_the_test_accuracy_and_says_there_was_no_validation(
        promoted: tuple[Path, str]) -> None:
    out, printed = promoted
    text = (out / rundir.SUMMARY).read_text()
    assert "NaN" not in text  # strict JSON, readable by any parser
    summary = json.loads(text)
    assert 0.0 < summary["test_acc"] <= 1.0 and summary["test_images"] == 10_000
    assert f"test     accuracy {100 * summary['test_acc']:.2f}%" in printed
    assert summary["val_acc"] is None and summary["best_val_acc"] is None
    assert summary["validation"] == ("none: val_size = 0, trained on 400 of the 50,000 "
                                     "training images")
    assert summary["epochs"] == 1 and summary["resumed_from"] is None


def test_the_validation_note_counts_the_images_trained_on() -> None:
    assert validation_note(0, 0, 50_000) == ("none: val_size = 0, trained on all 50,000 "
                                             "training images")
    assert validation_note(0, 60_000, 50_000).startswith("none: val_size = 0, trained on all")
    assert validation_note(5000, 0, 50_000) == ("5,000 of the 50,000 training images held "
                                                "out, trained on 45,000")
    assert validation_note(5000, 3000, 50_000).endswith("trained on 3,000")


@pytest.mark.parametrize(("value", "why"), [
    ("0", "[final] only"), ("[0, 1000]", "[final] only"),
    # A range is refused for its values 1..9 first, with the rule that allows 0.
    ("{ low = 0, high = 1000 }", "final runs only")])
def test_search_run_refuses_val_size_0_in_train(value: str, why: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    study = smoke_file(tmp_path, **{"val_size = 1000": f"val_size = {value}"})
    db = tmp_path / "study.db"
    code = main(["run", "--study", str(study), "--storage", f"sqlite:///{db}",
                 "--n-trials", "1", "--executor", "local", "--device", "cpu",
                 "--data", str(tmp_path / "missing.tar.gz")])
    one_line_error(code, capsys, str(study), "train.val_size", why)
    assert not db.exists()  # refused before anything was stored


def test_val_size_0_is_accepted_in_final(tmp_path: Path) -> None:
    spec = load_spec(smoke_file(tmp_path, **{SMOKE_FINAL: FINAL}))
    assert spec.train["val_size"].value == 200 and spec.final["val_size"] == 0
    final = spec.final_train(TrainConfig(val_size=200))
    assert final.val_size == 0 and final.train_subset == 400
    budget = load_spec("resnet-budget")
    assert budget.final["val_size"] == 0 and budget.final["train_subset"] == 0
    assert all(0 not in dim.extremes() for key, dim in budget.train.items()
               if key == "val_size")
    with pytest.raises(SpecError, match=r"train\.val_size: 0 .*\[final\] only"):
        load_spec(smoke_file(tmp_path, **{"val_size = 1000": "val_size = 0",
                                          SMOKE_FINAL: FINAL}))
