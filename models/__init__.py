"""Architecture description, builder and exact counting."""

from __future__ import annotations

from models.baselines import BASELINES, register
from models.builder import build_model
from models.config import ArchConfig, StageConfig
from models.counting import count_flops, count_params
from models.validate import ConfigError

__all__ = [
    "BASELINES",
    "ArchConfig",
    "ConfigError",
    "StageConfig",
    "build_model",
    "count_flops",
    "count_params",
    "register",
]
