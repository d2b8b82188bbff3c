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


def nan_or_oom(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """The real trainer, with two faults for bottleneck networks.

    Stem width 8: a forward hook turns the logits NaN from the third step on, so
    the real divergence check of `fit` stops the trial. Stem width 16: CUDA's
    out-of-memory error, raised after the first epoch as a full card would.
    Every other network trains normally.
    """
    import torch

    import trainers.training as training

    if arch.block.name == "bottleneck" and arch.stem_width == 16:
        report = kwargs.pop("report")

        def oom_report(epoch: int, metrics: dict[str, float]) -> bool:
            report(epoch, metrics)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                         "(simulated on the CPU)")

        return fit(arch, train, data, report=oom_report, **kwargs)
    if arch.block.name != "bottleneck" or arch.stem_width != 8:
        return fit(arch, train, data, **kwargs)
    original = training.build_model

    def poisoned(*args: Any, **kw: Any) -> Any:
        model = original(*args, **kw)
        calls = [0]

        def hook(module: Any, inputs: Any, output: Any) -> Any:
            calls[0] += 1
            return output * float("nan") if calls[0] >= 3 else output

        model.register_forward_hook(hook)
        return model

    training.build_model = poisoned  # type: ignore[assignment]
    try:
        return fit(arch, train, data, **kwargs)
    finally:
        training.build_model = original  # type: ignore[assignment]


def buggy(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """A trainer with a bug: a ValueError that is no trial's own failure (until issue 12,
    such errors were taken for failed trials and counted, using up a whole study)."""
    kwargs["report"](1, {"val_acc": 0.5, "val_loss": 1.0, "seconds": 0.0,
                         "images_per_s": 0.0})
    raise ValueError("a bug in the trainer: shapes (3, 4) and (5, 6) do not match")


def bad_data_then_fit(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """A data error (the trial's own failure) for networks with stem width 8, else training."""
    from trainers import DataError

    if arch.stem_width == 8:
        raise DataError("train/cat/17.jpg", "unreadable image")
    return instant(arch, train, data, **kwargs)


WEAK_LR = 1e-4  # recipes at this learning rate learn nothing, for `weak_at_low_lr`


def weak_at_low_lr(arch: Any, train: Any, data: Any, **kwargs: Any) -> Any:
    """No training: a learning curve per epoch that the pruner judges through the worker's
    real report callback. Flat at chance for `WEAK_LR`, else rising, with a small offset
    by architecture so that trials differ; stops as soon as the callback says so."""
    from types import SimpleNamespace

    from models import count_params

    offset = count_params(arch) % 97 / 2000
    acc = 0.1
    for epoch in range(1, train.epochs + 1):
        acc = 0.1 if train.lr <= WEAK_LR else 0.5 + 0.1 * epoch + offset
        metrics = {"val_acc": acc, "val_loss": 2.5 - 2 * acc, "seconds": 0.125 * epoch,
                   "images_per_s": 1000.0 + epoch}
        if kwargs["report"](epoch, metrics):
            return SimpleNamespace(stopped=True, val_acc=acc, epochs=epoch)
    return SimpleNamespace(stopped=False, val_acc=acc, epochs=train.epochs)
