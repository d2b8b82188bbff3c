"""A trainer that returns at once, for timing the search's orchestration alone.

``instant`` has the signature of `trainers.fit`: it reports one epoch with a
validation accuracy computed from the architecture (so TPE has something to
model, and a run is repeatable) and returns a `FitResult` without training.
Workers get it as ``RunOptions(trainer=stub_trainer.instant)`` (pickled by name), so this
folder must be on the worker processes' ``PYTHONPATH``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from models import ArchConfig, count_params
from trainers.training import FitResult

METRICS = {"val_loss": 1.0, "train_loss": 1.0, "train_acc": 0.5, "lr": 0.1,
           "seconds": 0.0, "images_per_s": 0.0}


def instant(arch: ArchConfig, train: Any, data: Any, *, device: Any = None,
            report: Callable[[int, dict[str, float]], bool] | None = None,
            log: Callable[[str], None] | None = None, **_: Any) -> FitResult:
    """One reported epoch, no training: ``val_acc`` = parameters mod 1000, over 1000."""
    n_params = count_params(arch)
    metrics = {"val_acc": n_params % 1000 / 1000, **METRICS}
    stopped = bool(report(1, metrics)) if report is not None else False
    return FitResult(model=nn.Identity(), history=[metrics], epochs=1, stopped=stopped,
                     resumed_from=None, seconds=0.0, device=str(device or "cpu"),
                     n_params=n_params)
