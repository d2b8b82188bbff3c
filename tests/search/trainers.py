"""Trainers for the search tests, loaded by workers through `--trainer`.

They wrap the real `trainers.fit`; each adds one fault a test needs.
"""

from __future__ import annotations

from typing import Any

from trainers import TrainingDiverged, fit

LR_LIMIT = 0.05  # recipes above this learning rate "diverge"


def diverge_above_lr(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """The real trainer, except that high learning rates raise `TrainingDiverged`."""
    if train.lr > LR_LIMIT:
        raise TrainingDiverged(epoch=1, step=3)
    return fit(arch, train, data, **kwargs)


def slow(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """The real trainer, reporting slowly, so that a test can interrupt a trial."""
    import time

    report = kwargs.pop("report")

    def slow_report(epoch: int, metrics: dict[str, float]) -> bool:
        time.sleep(3)
        return bool(report(epoch, metrics))

    return fit(arch, train, data, report=slow_report, **kwargs)


def instant(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """No training: one report and a result at once, so trials start back to back."""
    from types import SimpleNamespace

    from models import count_params

    acc = count_params(arch) % 1000 / 1000
    stop = kwargs["report"](1, {"val_acc": acc, "val_loss": 1.0, "seconds": 0.0,
                                "images_per_s": 0.0})
    return SimpleNamespace(stopped=bool(stop), val_acc=acc, epochs=1)
