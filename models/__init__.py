"""Architecture description, block registry, builder and exact counting.

Names are imported on first use (PEP 562), so ``import models`` and everything a
study file needs (configs, counting, baselines) leave torch unimported; only
`build_model` brings it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_attributes

if TYPE_CHECKING:
    from models.baselines import BASELINES, register
    from models.blocks import BLOCKS, Basic, Block, Bottleneck, register_block
    from models.builder import build_model
    from models.config import ArchConfig, StageConfig
    from models.counting import count_flops, count_params
    from models.validate import ConfigError

_HOMES = {
    "BASELINES": "models.baselines", "register": "models.baselines",
    "BLOCKS": "models.blocks", "Basic": "models.blocks", "Block": "models.blocks",
    "Bottleneck": "models.blocks", "register_block": "models.blocks",
    "build_model": "models.builder",
    "ArchConfig": "models.config", "StageConfig": "models.config",
    "count_flops": "models.counting", "count_params": "models.counting",
    "ConfigError": "models.validate",
}

__all__ = [
    "BASELINES",
    "BLOCKS",
    "ArchConfig",
    "Basic",
    "Block",
    "Bottleneck",
    "ConfigError",
    "StageConfig",
    "build_model",
    "count_flops",
    "count_params",
    "register",
    "register_block",
]


__getattr__, __dir__ = lazy_attributes("models", _HOMES, globals())
