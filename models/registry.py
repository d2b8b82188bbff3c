"""The block registry: the `Block` base class every residual block type subclasses,
`BLOCKS` (name -> type) and the checks bottleneck-like types share.

The entries themselves live in `models.blocks` (post-activation basic and
bottleneck, and the import that registers the other families),
`models.blocks_preact` (pre-activation and PyramidNet) and `models.blocks_shake`.
Import block types from `models.blocks`, which loads them all.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from models.shapes import MAX_WIDTH, Layer, conv_out_size
from models.validate import ConfigError, kwargs_from_dict

if TYPE_CHECKING:
    from torch import nn

    from models.config import ArchConfig


@dataclass(frozen=True)
class Block(ABC):
    """One residual block type; an instance is that type with its settings.

    Contract: ``layers`` yields, in forward order, exactly the weighted layers of
    the module ``build`` makes, apart from the squeeze-excitation gate and the
    shortcut, which the network adds itself (`models.counting` and
    `models.modules.Residual`). `tests/models/test_builder.py` holds every
    registered block to this over random configs.
    """

    name: ClassVar[str]  # the block type, as study files and configs spell it
    # Pre-activation (BN-ReLU before each conv): the stem has no ReLU, the residual sum
    # none after it, and the network ends with BN-ReLU before pooling.
    preact: ClassVar[bool] = False

    @abstractmethod
    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        """The residual branch's weighted layers for a ``size``-pixel input."""

    @abstractmethod
    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        """The block as a `models.modules.Residual` (SE, shortcut and the kind of branch
        drop from ``arch``; ``drop``: this block's drop rate)."""

    def check_width(self, width: int) -> str | None:
        """What is wrong with ``width`` output channels for this block, or None."""
        return None

    def widths(self, start: int, width: int, blocks: int) -> list[int]:
        """Output channels of each of a stage's ``blocks`` blocks, for a stage of
        ``width``; ``start`` is the `base_width` before the stage (the stem's width
        before the first). Every block has the stage's width unless a type ramps it."""
        return [width] * blocks

    def base_width(self, width: int) -> int:
        """The width a following ramp starts from: a bottleneck's inner width."""
        return width

    def shortcut_layers(self, c_in: int, c_out: int, stride: int, size: int,
                        arch: ArchConfig) -> Iterator[Layer]:
        """The shortcut's weighted layers: a projection (conv + BN) where the shape
        changes (`models.modules.make_shortcut`), else none (the identity)."""
        if c_in != c_out or stride != 1:
            yield Layer(c_in, c_out, arch.shortcut_kernel, conv_out_size(size, stride))

    def fields(self) -> dict[str, Any]:
        """The block's own settings by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, **self.fields()}

    def describe(self) -> str:
        """``bottleneck``, or ``bottleneck(expansion=2)`` where a setting is not the default."""
        changed = [f"{k}={v!r}" for k, v in self.fields().items() if v != _default(type(self), k)]
        return self.name + (f"({', '.join(changed)})" if changed else "")


def _default(cls: type[Block], name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


BLOCKS: dict[str, type[Block]] = {}


def register_block(cls: type[Block]) -> type[Block]:
    """Add block type ``cls`` to `BLOCKS` under ``cls.name``; usable as a decorator.

    Raises:
        ValueError: the name is taken, or ``cls`` is not a frozen `Block`
            dataclass whose fields all have defaults.
    """
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Block) and dataclasses.is_dataclass(cls)
            and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise ValueError(f"a block type must be a frozen dataclass subclassing Block, got {cls!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a block type needs a name that is an identifier, got {name!r}")
    if name in BLOCKS:
        raise ValueError(f"block type {name!r} is already registered ({BLOCKS[name].__name__})")
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING or f.name == "type":
            raise ValueError(f"block {name!r}: field {f.name!r} needs a default and another name")
    BLOCKS[name] = cls
    return cls


def unregister_block(name: str) -> None:
    """Remove block type ``name`` (for tests that register a throwaway one)."""
    del BLOCKS[name]


def block_names() -> tuple[str, ...]:
    return tuple(BLOCKS)


def check_block_type(field: str, value: str) -> type[Block]:
    """The registered class of block type ``value``, else a `ConfigError` on ``field``."""
    cls = BLOCKS.get(value)
    if cls is None:
        raise ConfigError(field, value, f"must be one of {block_names()}")
    return cls


def block_from_dict(field: str, data: Any) -> Block:
    """Rebuild a block from `Block.to_dict` output (``{"type": ..., settings}``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(field, data, "must be a mapping with a 'type'")
    if "type" not in data:
        raise ConfigError(f"{field}.type", None, "is required")
    block_type = data["type"]
    if not isinstance(block_type, str):
        raise ConfigError(f"{field}.type", block_type, "must be str")
    cls = check_block_type(f"{field}.type", block_type)
    settings = {k: v for k, v in data.items() if k != "type"}
    kwargs = kwargs_from_dict(cls, settings, prefix=f"{field}.")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{field}.{err.field}", err.value, err.problem) from None


def check_expansion(expansion: int) -> None:
    """An inner width of >= 1 channel needs 1 <= expansion <= MAX_WIDTH."""
    if not 1 <= expansion <= MAX_WIDTH:
        raise ConfigError("expansion", expansion,
                          "must be >= 1" if expansion < 1 else f"must be <= {MAX_WIDTH}")


def check_groups(groups: int) -> None:
    if not 1 <= groups <= MAX_WIDTH:
        raise ConfigError("groups", groups, f"must be in 1..{MAX_WIDTH}")


def bottleneck_width_problem(block: Block, width: int, expansion: int,
                             groups: int = 1) -> str | None:
    """Why ``width`` does not suit a bottleneck of ``expansion`` and ``groups``, or None."""
    if width % expansion:
        return f"must be a multiple of expansion={expansion} for {block.name} blocks"
    if (width // expansion) % groups:
        return (f"must make an inner width (width / expansion={expansion}) divisible by "
                f"groups={groups} for {block.name} blocks")
    return None
