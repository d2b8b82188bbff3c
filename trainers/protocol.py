"""The trainer seam: what the search needs from a trainer, as types.

`trainers.fit` is the trainer; tests and benchmarks pass others with the same
signature (a stub that returns at once, one that fails on purpose). Torch-free,
so the search can name the type without loading the training engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from models import ArchConfig
    from trainers.config import TrainConfig

Report = Callable[[int, dict[str, float]], bool]  # (epoch, metrics) -> stop?


class TrainResult(Protocol):
    """What the search reads of a finished run (`trainers.FitResult` has more)."""

    @property
    def stopped(self) -> bool: ...  # the report callback stopped the run

    @property
    def epochs(self) -> int: ...  # epochs completed

    @property
    def val_acc(self) -> float: ...  # of the last epoch


class Trainer(Protocol):
    """Trains ``arch`` with ``train_cfg`` on ``data``, calling ``report`` after each epoch.

    Contract: ``report(epoch, metrics)`` gets at least ``val_acc``, ``val_loss``,
    ``seconds`` and ``images_per_s``, and returning True stops the run (the result
    then has ``stopped=True``). A failure of the trial's own raises
    `trainers.TrainingDiverged`, `torch.OutOfMemoryError` or `trainers.DataError`;
    anything else raised is a bug.
    """

    def __call__(self, arch: ArchConfig, train_cfg: TrainConfig, data: Any, *,
                 device: Any = None, report: Report | None = None,
                 log: Callable[[str], None] = print) -> TrainResult: ...


def default_trainer() -> Trainer:
    """`trainers.fit` (imports torch)."""
    from trainers.training import fit

    trainer: Trainer = fit
    return trainer


def load_trainer(path: str) -> Trainer:
    """A trainer named ``"module:function"`` (a test or benchmark hook of the CLI).

    Raises:
        ValueError: no such module or function, or not callable.
    """
    import importlib

    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"trainer must be 'module:function', got {path!r}")
    try:
        trainer = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"trainer {path!r} cannot be loaded: {err}") from None
    if not callable(trainer):
        raise ValueError(f"trainer {path!r} is not callable")
    loaded: Trainer = trainer
    return loaded
