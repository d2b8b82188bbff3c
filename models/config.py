"""`ArchConfig`: the one description of a network.

The search space produces it, `count_params` reads it, `build_model` builds it,
checkpoints store it and the dashboard shows it as JSON. Nothing else describes a
network. Block types and their own settings come from the registry in
`models.blocks`; the network's ``block`` is the default that a stage's ``block``
overrides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from models.blocks import BLOCKS, Basic, Block, block_from_dict, block_names
from models.shapes import INPUT_SIZE, KERNEL_SIZES, MAX_WIDTH, feature_sizes
from models.validate import ConfigError, check_type, kwargs_from_dict

__all__ = ["DEFAULT_BLOCK", "INPUT_SIZE", "MAX_WIDTH", "ArchConfig", "StageConfig"]

POOL_TYPES = ("avg", "max")
# Random regularisers of the residual branch (`models.stochastic.BRANCH_DROPS`).
BRANCH_DROPS = ("none", "path", "shakedrop")
MAX_BLOCKS = 1000  # blocks per stage; counting walks every block, so this bounds its time
# What the first release wrote instead of ``block``: a flat type name and expansion.
LEGACY_BLOCK_KEYS = {"block_type": "type", "expansion": "expansion"}
DEFAULT_BLOCK = Basic()  # what a network is built of unless it says otherwise


def _check(ok: bool, field: str, value: Any, problem: str) -> None:
    if not ok:
        raise ConfigError(field, value, problem)


def _check_kernel(field: str, value: int) -> None:
    _check(value in KERNEL_SIZES, field, value, f"must be one of {KERNEL_SIZES}")


def _check_width(field: str, value: int) -> None:
    _check(1 <= value <= MAX_WIDTH, field, value, f"must be in 1..{MAX_WIDTH}")


def _check_block(field: str, value: Any, optional: bool = False) -> None:
    ok = isinstance(value, Block) or (optional and value is None)
    _check(ok, field, value, f"must be a block config ({', '.join(block_names())})"
           + (" or null" if optional else ""))


@dataclass(frozen=True)
class StageConfig:
    """A run of residual blocks with one output width."""

    blocks: int  # residual blocks in the stage, >= 1
    width: int  # output channels of every block in the stage
    kernel: int = 3  # side of the blocks' spatial convs, odd
    stride: int = 1  # stride of the stage's first block: 1 or 2
    block: Block | None = None  # this stage's block type; None = the network's

    def __post_init__(self) -> None:
        _check(self.blocks >= 1, "blocks", self.blocks, "must be >= 1")
        _check(self.blocks <= MAX_BLOCKS, "blocks", self.blocks, f"must be <= {MAX_BLOCKS}")
        _check_width("width", self.width)
        _check_kernel("kernel", self.kernel)
        _check(self.stride in (1, 2), "stride", self.stride, "must be 1 or 2")
        _check_block("block", self.block, optional=True)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"blocks": self.blocks, "width": self.width,
                                "kernel": self.kernel, "stride": self.stride}
        if self.block is not None:
            data["block"] = self.block.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "") -> StageConfig:
        kwargs = kwargs_from_dict(cls, data, prefix=prefix + ".", skip=("block",))
        if kwargs.get("block") is not None:
            kwargs["block"] = block_from_dict(f"{prefix}.block", kwargs["block"])
        try:
            return cls(**kwargs)
        except ConfigError as err:  # range errors name the bare field
            raise ConfigError(f"{prefix}.{err.field}", err.value, err.problem) from None


@dataclass(frozen=True)
class ArchConfig:
    """A ResNet for 32x32 images: stem, stages of residual blocks, pooled head.

    Each block is built by its registered type (`models.blocks`): post-activation
    basic and bottleneck blocks (conv, BN, ReLU; the sum is followed by ReLU),
    pre-activation and PyramidNet blocks, Shake-Shake. Unless its type says
    otherwise, a block whose input and output shapes differ gets a projection
    shortcut (conv + BN), else the identity. A stage whose ``block`` equals the
    network's is stored with ``block=None``, so equal networks compare equal.
    """

    stages: tuple[StageConfig, ...]
    stem_width: int = 64  # channels of the stem conv (stride 1)
    stem_kernel: int = 3  # side of the stem conv, odd
    block: Block = DEFAULT_BLOCK  # block type and its settings, for stages that name none
    shortcut_kernel: int = 1  # side of the projection shortcut conv, odd
    shortcut_pool: bool = False  # strided projections: avg-pool, then stride-1 conv (ResNet-D)
    pool: str = "avg"  # head pooling: "avg" or "max"
    pool_kernel: int | None = None  # head pooling window (stride = window); None = global
    se_ratio: float = 0.0  # squeeze-excitation hidden channels / width; 0 = no SE
    dropout: float = 0.0  # dropout probability before the classifier
    # Residual-branch regulariser: "path" (stochastic depth) or "shakedrop"; block l of L
    # drops its branch with probability branch_drop_rate * l / L in training.
    branch_drop: str = "none"
    branch_drop_rate: float = 0.0  # the last block's rate; must be 0 with "none"

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        _check(len(stages) >= 1, "stages", stages, "must hold at least one stage")
        for i, stage in enumerate(stages):
            _check(isinstance(stage, StageConfig), f"stages[{i}]", stage, "must be a StageConfig")
        _check_block("block", self.block)
        stages = tuple(replace(s, block=None) if s.block == self.block else s for s in stages)
        object.__setattr__(self, "stages", stages)
        for i, (stage, block) in enumerate(zip(stages, self.stage_blocks(), strict=True)):
            problem = block.check_width(stage.width)
            _check(problem is None, f"stages[{i}].width", stage.width, str(problem))
        _check_width("stem_width", self.stem_width)
        _check_kernel("stem_kernel", self.stem_kernel)
        _check_kernel("shortcut_kernel", self.shortcut_kernel)
        _check(self.pool in POOL_TYPES, "pool", self.pool, f"must be one of {POOL_TYPES}")
        final = self.feature_sizes()[-1]
        if self.pool_kernel is not None:
            _check(1 <= self.pool_kernel <= final, "pool_kernel", self.pool_kernel,
                   f"must be in 1..{final} (the final feature map is {final}x{final}) or null")
        _check(0.0 <= self.se_ratio <= 4.0, "se_ratio", self.se_ratio, "must be in 0..4")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        _check(self.branch_drop in BRANCH_DROPS, "branch_drop", self.branch_drop,
               f"must be one of {BRANCH_DROPS}")
        _check(0.0 <= self.branch_drop_rate < 1.0, "branch_drop_rate", self.branch_drop_rate,
               "must be in [0, 1)")
        _check(self.branch_drop != "none" or self.branch_drop_rate == 0.0, "branch_drop_rate",
               self.branch_drop_rate, "must be 0 when branch_drop is 'none'")

    def stage_blocks(self) -> tuple[Block, ...]:
        """The block each stage is built of: its own, else the network's."""
        return tuple(s.block or self.block for s in self.stages)

    def feature_sizes(self) -> list[int]:
        """Spatial side of the feature map after the stem and after each stage."""
        return feature_sizes(s.stride for s in self.stages)

    def head_features(self) -> int:
        """Inputs of the final linear layer."""
        if self.pool_kernel is None:
            return self.stages[-1].width
        side = self.feature_sizes()[-1] // self.pool_kernel
        return self.stages[-1].width * side * side

    def describe(self) -> str:
        """One line for terminals, e.g. ``basic s64k3 | 4x64k3 4x128k3/2 | sc1 | avg``.

        Where stages differ in block type, those not of the network's block carry
        theirs: ``4x64k3 3x256k3/2@bottleneck``.
        """
        blocks = self.stage_blocks()
        uniform = len(set(blocks)) == 1
        stages = " ".join(
            f"{s.blocks}x{s.width}k{s.kernel}" + (f"/{s.stride}" if s.stride > 1 else "")
            + ("" if uniform or b == self.block else f"@{b.describe()}")
            for s, b in zip(self.stages, blocks, strict=True)
        )
        shortcut = f"sc{self.shortcut_kernel}" + ("p" if self.shortcut_pool else "")
        head = self.pool + ("" if self.pool_kernel is None else f"{self.pool_kernel}")
        extras = (f" se{self.se_ratio:g}" if self.se_ratio else "") + (
            f" drop{self.dropout:g}" if self.dropout else "") + (
            f" {self.branch_drop}{self.branch_drop_rate:g}" if self.branch_drop != "none" else "")
        block = (blocks[0] if uniform else self.block).describe()
        return (f"{block} s{self.stem_width}k{self.stem_kernel} | {stages} | "
                f"{shortcut} | {head}{extras}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe) that `from_dict` turns back into an equal config."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stages"] = [s.to_dict() for s in self.stages]
        data["block"] = self.block.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        """Rebuild a config from `to_dict` output, or from the first release's.

        That release wrote ``block_type`` and ``expansion`` instead of ``block``;
        an ``expansion`` beside a block type without that setting is dropped.

        Raises:
            ConfigError: a field is unknown, missing, of the wrong type or out of
                range; the message names the field and the value.
        """
        data = _upgrade(data)
        kwargs = kwargs_from_dict(cls, data, skip=("stages", "block"))
        raw_stages = kwargs["stages"]
        if not isinstance(raw_stages, (list, tuple)):
            raise ConfigError("stages", raw_stages, "must be a list of stages")
        kwargs["stages"] = tuple(
            StageConfig.from_dict(raw, prefix=f"stages[{i}]") for i, raw in enumerate(raw_stages))
        if "block" in kwargs:
            kwargs["block"] = block_from_dict("block", kwargs["block"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))


def _upgrade(data: Any) -> Any:
    """A first-release dict (``block_type``, ``expansion``) in today's form."""
    if not isinstance(data, Mapping) or not LEGACY_BLOCK_KEYS.keys() & data.keys():
        return data
    legacy = [k for k in LEGACY_BLOCK_KEYS if k in data]
    if "block" in data:
        raise ConfigError(legacy[0], data[legacy[0]], "cannot be given with 'block'")
    block_type = check_type("block_type", data.get("block_type", Basic.name), str)
    cls = BLOCKS.get(block_type)
    own = {f.name for f in fields(cls)} if cls is not None else set()
    block: dict[str, Any] = {"type": block_type}
    for key in legacy:
        setting = LEGACY_BLOCK_KEYS[key]
        if setting in own:
            block[setting] = data[key]
        elif setting != "type":  # e.g. a basic block's meaningless expansion
            check_type(key, data[key], int)
    try:
        block_from_dict("block", block)
    except ConfigError as err:  # name the keys the dict has
        names = {f"block.{setting}": key for key, setting in LEGACY_BLOCK_KEYS.items()}
        raise ConfigError(names.get(err.field, err.field), err.value, err.problem) from None
    rest = {k: v for k, v in data.items() if k not in LEGACY_BLOCK_KEYS}
    return {**rest, "block": block}
