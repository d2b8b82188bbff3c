"""Training engine: CIFAR-10 data, device-side augmentation, training, checkpoints.

Imports neither Optuna nor Ray.
"""

from __future__ import annotations

from trainers.checkpoint import CheckpointError
from trainers.config import TrainConfig
from trainers.data import CLASSES, CifarData, load_cifar10, read_unlabeled
from trainers.safeio import DataError
from trainers.training import FitResult, TrainingDiverged, fit

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
