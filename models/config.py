"""`ArchConfig`: the one description of a network.

The search space produces it, `count_params` reads it, `build_model` builds it,
checkpoints store it and the dashboard shows it as JSON. Nothing else describes a
network.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from models.validate import ConfigError, kwargs_from_dict

INPUT_SIZE = 32  # side of a CIFAR-10 image, pixels
BLOCK_TYPES = ("basic", "bottleneck")
POOL_TYPES = ("avg", "max")
KERNEL_SIZES = (1, 3, 5, 7)
MAX_WIDTH = 4096  # channels; far past anything a 5M budget admits, catches typos
MAX_BLOCKS = 1000  # blocks per stage; counting walks every block, so this bounds its time


def _check(ok: bool, field: str, value: Any, problem: str) -> None:
    if not ok:
        raise ConfigError(field, value, problem)


def _check_kernel(field: str, value: int) -> None:
    _check(value in KERNEL_SIZES, field, value, f"must be one of {KERNEL_SIZES}")


def _check_width(field: str, value: int) -> None:
    _check(1 <= value <= MAX_WIDTH, field, value, f"must be in 1..{MAX_WIDTH}")


def conv_out_size(size: int, stride: int) -> int:
    """Spatial side after a 'same'-padded odd-kernel conv (or pool) of ``stride``."""
    return -(-size // stride)


def se_channels(width: int, ratio: float) -> int:
    """Hidden channels of a squeeze-excitation gate on ``width`` channels."""
    return max(1, int(width * ratio + 0.5))


@dataclass(frozen=True)
class StageConfig:
    """A run of residual blocks with one output width."""

    blocks: int  # residual blocks in the stage, >= 1
    width: int  # output channels of every block in the stage
    kernel: int = 3  # side of the blocks' spatial convs, odd
    stride: int = 1  # stride of the stage's first block: 1 or 2

    def __post_init__(self) -> None:
        _check(self.blocks >= 1, "blocks", self.blocks, "must be >= 1")
        _check(self.blocks <= MAX_BLOCKS, "blocks", self.blocks, f"must be <= {MAX_BLOCKS}")
        _check_width("width", self.width)
        _check_kernel("kernel", self.kernel)
        _check(self.stride in (1, 2), "stride", self.stride, "must be 1 or 2")


@dataclass(frozen=True)
class ArchConfig:
    """A ResNet for 32x32 images: stem, stages of residual blocks, pooled head.

    Blocks are post-activation (conv, BN, ReLU; the sum is followed by ReLU). A
    block whose input and output shapes differ gets a projection shortcut
    (conv + BN); otherwise the shortcut is the identity.
    """

    stages: tuple[StageConfig, ...]
    stem_width: int = 64  # channels of the stem conv (stride 1)
    stem_kernel: int = 3  # side of the stem conv, odd
    block_type: str = "basic"  # "basic": two kxk convs; "bottleneck": 1x1, kxk, 1x1
    expansion: int = 4  # bottleneck only: stage width / inner width
    shortcut_kernel: int = 1  # side of the projection shortcut conv, odd
    shortcut_pool: bool = False  # strided projections: avg-pool, then stride-1 conv (ResNet-D)
    pool: str = "avg"  # head pooling: "avg" or "max"
    pool_kernel: int | None = None  # head pooling window (stride = window); None = global
    se_ratio: float = 0.0  # squeeze-excitation hidden channels / width; 0 = no SE
    dropout: float = 0.0  # dropout probability before the classifier

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        _check(len(stages) >= 1, "stages", stages, "must hold at least one stage")
        for i, stage in enumerate(stages):
            _check(isinstance(stage, StageConfig), f"stages[{i}]", stage, "must be a StageConfig")
        _check_width("stem_width", self.stem_width)
        _check_kernel("stem_kernel", self.stem_kernel)
        _check(self.block_type in BLOCK_TYPES, "block_type", self.block_type,
               f"must be one of {BLOCK_TYPES}")
        _check(self.expansion >= 1, "expansion", self.expansion, "must be >= 1")
        # An inner width (width / expansion) of at least one channel needs this.
        _check(self.expansion <= MAX_WIDTH, "expansion", self.expansion,
               f"must be <= {MAX_WIDTH}")
        if self.block_type == "bottleneck":
            for i, stage in enumerate(stages):
                _check(stage.width % self.expansion == 0, f"stages[{i}].width", stage.width,
                       f"must be a multiple of expansion={self.expansion} for bottleneck blocks")
        _check_kernel("shortcut_kernel", self.shortcut_kernel)
        _check(self.pool in POOL_TYPES, "pool", self.pool, f"must be one of {POOL_TYPES}")
        final = self.feature_sizes()[-1]
        if self.pool_kernel is not None:
            _check(1 <= self.pool_kernel <= final, "pool_kernel", self.pool_kernel,
                   f"must be in 1..{final} (the final feature map is {final}x{final}) or null")
        _check(0.0 <= self.se_ratio <= 4.0, "se_ratio", self.se_ratio, "must be in 0..4")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")

    def feature_sizes(self) -> list[int]:
        """Spatial side of the feature map after the stem and after each stage."""
        sizes = [INPUT_SIZE]
        for stage in self.stages:
            sizes.append(conv_out_size(sizes[-1], stage.stride))
        return sizes

    def head_features(self) -> int:
        """Inputs of the final linear layer."""
        if self.pool_kernel is None:
            return self.stages[-1].width
        side = self.feature_sizes()[-1] // self.pool_kernel
        return self.stages[-1].width * side * side

    def describe(self) -> str:
        """One line for terminals, e.g. ``basic s64k3 | 4x64k3 4x128k3/2 | sc1 | avg``."""
        stages = " ".join(
            f"{s.blocks}x{s.width}k{s.kernel}" + (f"/{s.stride}" if s.stride > 1 else "")
            for s in self.stages
        )
        shortcut = f"sc{self.shortcut_kernel}" + ("p" if self.shortcut_pool else "")
        head = self.pool + ("" if self.pool_kernel is None else f"{self.pool_kernel}")
        extras = (f" se{self.se_ratio:g}" if self.se_ratio else "") + (
            f" drop{self.dropout:g}" if self.dropout else "")
        return (f"{self.block_type} s{self.stem_width}k{self.stem_kernel} | {stages} | "
                f"{shortcut} | {head}{extras}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe) that `from_dict` turns back into an equal config."""
        data = dataclasses.asdict(self)
        data["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        """Rebuild a config from `to_dict` output.

        Raises:
            ConfigError: a field is unknown, missing, of the wrong type or out of
                range; the message names the field and the value.
        """
        kwargs = kwargs_from_dict(cls, data, skip=("stages",))
        raw_stages = kwargs["stages"]
        if not isinstance(raw_stages, (list, tuple)):
            raise ConfigError("stages", raw_stages, "must be a list of stages")
        stages = []
        for i, raw in enumerate(raw_stages):
            prefix = f"stages[{i}]"
            kwargs_i = kwargs_from_dict(StageConfig, raw, prefix=prefix + ".")
            try:
                stages.append(StageConfig(**kwargs_i))
            except ConfigError as err:  # range errors name the bare field
                raise ConfigError(f"{prefix}.{err.field}", err.value, err.problem) from None
        kwargs["stages"] = tuple(stages)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))
