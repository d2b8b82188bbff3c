"""Training engine: CIFAR-10 data, device-side augmentation, training, checkpoints.

Imports neither Optuna nor Ray. Names are imported on first use (PEP 562), so
``import trainers.config`` (what a study file needs) leaves torch unimported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_attributes

if TYPE_CHECKING:
    from trainers.checkpoint import CheckpointError
    from trainers.config import TrainConfig
    from trainers.data import CLASSES, CifarData, load_cifar10, read_unlabeled
    from trainers.safeio import DataError
    from trainers.training import FitResult, TrainingDiverged, fit

_HOMES = {
    "CLASSES": "trainers.data", "CifarData": "trainers.data", "load_cifar10": "trainers.data",
    "read_unlabeled": "trainers.data",
    "CheckpointError": "trainers.checkpoint",
    "DataError": "trainers.safeio",
    "FitResult": "trainers.training", "TrainingDiverged": "trainers.training",
    "fit": "trainers.training",
    "TrainConfig": "trainers.config",
}

__all__ = [
    "CLASSES",
    "CheckpointError",
    "CifarData",
    "DataError",
    "FitResult",
    "TrainConfig",
    "TrainingDiverged",
    "fit",
    "load_cifar10",
    "read_unlabeled",
]


__getattr__, __dir__ = lazy_attributes("trainers", _HOMES, globals())
