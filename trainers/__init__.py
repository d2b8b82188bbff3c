"""Training engine: data, augmentation, training loop, checkpoints."""

from __future__ import annotations

from trainers.config import TrainConfig

__all__ = ["TrainConfig"]
