"""``val_size = 0``: a final run on every training image, with no validation split.

The split keeps every image, `fit` validates nothing (val_loss and val_acc are NaN
in each epoch's metrics) and every reader of those metrics copes: `FitResult`, the
run folder's metrics.csv, the curves plot and the progress lines.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import trainers.training as training
from models import ArchConfig, StageConfig
from search.results import plots
from search.results.progress import EpochProgress, epoch_line
from trainers import rundir
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.training import FitResult, Split, fit

TINY = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16)
ALL_DATA = TrainConfig(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=400,
                       val_size=0, tta_flip=False)
CPU = torch.device("cpu")


def quiet(_: str) -> None:
    pass


def row(epoch: int, val_acc: float, val_loss: float) -> dict[str, float]:
    """One epoch's metrics as `fit` reports them."""
    return {"epoch": float(epoch), "train_loss": 2.0 - 0.1 * epoch, "train_acc": 0.1 * epoch,
            "val_loss": val_loss, "val_acc": val_acc, "lr": 0.05, "seconds": 1.5,
            "images_per_s": 1000.0}


# -- the split -------------------------------------------------------------------------


def test_val_size_0_keeps_every_training_image_and_no_validation(cifar_jpeg: CifarData) -> None:
    split = Split.carve(cifar_jpeg, TrainConfig(val_size=0), CPU)
    assert torch.equal(split.train_labels, torch.from_numpy(cifar_jpeg.train_labels))
    assert torch.equal(split.train_images, torch.from_numpy(cifar_jpeg.train_images))
    assert split.val_images.shape == (0, 32, 32, 3) and split.val_labels.shape == (0,)
    assert split.val_images.dtype == torch.uint8


def test_val_size_0_draws_the_subset_from_every_training_image(cifar_jpeg: CifarData) -> None:
    n = len(cifar_jpeg.train_labels)
    held = Split.carve(cifar_jpeg, TrainConfig(val_size=n // 2), CPU)
    assert len(held.train_labels) == n - n // 2 and len(held.val_labels) == n // 2
    split = Split.carve(cifar_jpeg, dataclasses.replace(ALL_DATA, train_subset=400), CPU)
    assert len(split.train_labels) == 400 and not len(split.val_labels)
    assert np.bincount(split.train_labels.numpy(), minlength=10).tolist() == [40] * 10
    # With half the images held out, a subset of 400 could never contain them; without
    # a hold-out it is drawn from all and does.
    held_out = {bytes(image) for image in held.val_images.numpy()}
    assert any(bytes(image) in held_out for image in split.train_images.numpy())


# -- fit ---------------------------------------------------------------------------------


def test_fit_without_validation_trains_on_the_whole_subset_and_reports_train_metrics(
        cifar_jpeg: CifarData, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_evaluation(*_: Any, **__: Any) -> tuple[float, float]:
        raise AssertionError("evaluated a validation split that does not exist")

    trained_on: list[int] = []

    class CountingLoader(training.TrainLoader):
        def __init__(self, images: torch.Tensor, *args: Any) -> None:
            trained_on.append(len(images))
            super().__init__(images, *args)

    monkeypatch.setattr(training, "evaluate", no_evaluation)
    monkeypatch.setattr(training, "TrainLoader", CountingLoader)
    seen: list[dict[str, float]] = []
    result = fit(TINY, ALL_DATA, cifar_jpeg, device="cpu",
                 report=lambda _, m: bool(seen.append(m)), log=quiet)
    assert trained_on == [400]
    assert [m["epoch"] for m in seen] == [1.0, 2.0] and result.history == seen
    for metrics in seen:
        assert math.isnan(metrics["val_acc"]) and math.isnan(metrics["val_loss"])
        assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics["train_acc"] <= 1.0
        assert metrics["images_per_s"] > 0 and metrics["lr"] >= 0
    assert result.epochs == 2 and not result.stopped
    assert math.isnan(result.val_acc) and math.isnan(result.best_val_acc)


def test_a_run_without_validation_resumes_from_its_checkpoint(cifar_jpeg: CifarData,
                                                              tmp_path: Path) -> None:
    cfg = dataclasses.replace(ALL_DATA, train_subset=128)
    first = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path,
                deterministic=True, report=lambda epoch, _: epoch == 1, log=quiet)
    assert first.stopped and first.epochs == 1
    said: list[str] = []
    second = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path,
                 deterministic=True, log=said.append)
    assert second.resumed_from == 1 and second.epochs == 2, said
    def known(m: dict[str, float]) -> dict[str, float]:  # NaN equals nothing
        return {k: v for k, v in m.items() if not math.isnan(v)}

    assert len(second.history) == 2 and known(second.history[0]) == known(first.history[0])
    assert all(math.isnan(m["val_acc"]) for m in second.history)


def test_best_val_acc_skips_epochs_without_validation() -> None:
    def result(*accs: float) -> FitResult:
        return FitResult(model=nn.Identity(), history=[row(i, a, 1.0) for i, a in
                                                       enumerate(accs, 1)],
                         epochs=len(accs), stopped=False, resumed_from=None, seconds=1.0,
                         device="cpu", n_params=0)

    assert result(math.nan, 0.3, 0.2).best_val_acc == 0.3
    assert result(0.1, math.nan).best_val_acc == 0.1 and math.isnan(result(0.1, math.nan).val_acc)
    assert math.isnan(result(math.nan, math.nan).best_val_acc)
    assert math.isnan(result().best_val_acc) and math.isnan(result().val_acc)


# -- readers of the metrics ------------------------------------------------------------------


def test_metrics_csv_round_trips_missing_validation(tmp_path: Path) -> None:
    history = [row(1, math.nan, math.nan), row(2, math.nan, math.nan)]
    rundir.write_metrics(tmp_path, history)
    back = rundir.read_metrics(tmp_path)
    assert [r["epoch"] for r in back] == [1, 2]
    assert all(math.isnan(r["val_acc"]) and math.isnan(r["val_loss"]) for r in back)
    assert [r["train_acc"] for r in back] == pytest.approx([0.1, 0.2])
    rundir.write_metrics(tmp_path, [row(1, 0.25, 1.75)])  # a run with validation: unchanged
    assert rundir.read_metrics(tmp_path)[0]["val_acc"] == 0.25


def test_progress_lines_show_train_metrics_and_say_there_is_no_validation() -> None:
    line = epoch_line(row(3, math.nan, math.nan), 10)
    assert line.startswith("epoch  3/10  train loss 1.7000 acc  30.00%  no validation split")
    assert "val" not in line.replace("no validation split", "") and "nan" not in line
    with_val = epoch_line(row(3, 0.5, 1.25), 10)
    assert "val loss 1.2500 acc  50.00%" in with_val and "no validation" not in with_val
    stream = io.StringIO()
    EpochProgress(10, stream, tty=False).epoch(row(1, math.nan, math.nan))
    assert "no validation split" in stream.getvalue()


@pytest.mark.parametrize("val_acc", [math.nan, 0.4])
def test_curves_draw_validation_only_where_there_is_one(val_acc: float, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    labels: list[list[str]] = []
    save = plots.save_figure

    def record(fig: Any, path: Path) -> Path:
        labels.extend([line.get_label() for line in ax.get_lines()] for ax in fig.axes[:2])
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", record)
    history = [row(1, val_acc, 2.0 * val_acc), row(2, val_acc, val_acc)]
    path = plots.plot_curves(history, tmp_path / "curves.png", title="t")
    assert path.read_bytes().startswith(b"\x89PNG")
    expected = ["train"] if math.isnan(val_acc) else ["train", "validation"]
    assert labels == [expected, expected]
