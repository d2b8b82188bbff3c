"""The block registry: each residual block type is one registered entry.

An entry is a frozen dataclass subclassing `Block`. Its dataclass fields are the
block's own settings (bottleneck ``expansion``), with types, defaults and checks
(``__post_init__``); its `Block.layers` is the analytic walk the exact counter
sums; its `Block.build` makes the module (importing torch only then). The config
(`models.config`), the counter, the builder, the study-file space and the tests
all read `BLOCKS`, so a block type is added in one place:

    @register_block
    @dataclass(frozen=True)
    class MyBlock(Block):
        name: ClassVar[str] = "mine"
        groups: int = 1  # a field: the study file's ``[arch] groups`` key

        def layers(self, c_in, c_out, kernel, stride, size): ...
        def build(self, c_in, c_out, kernel, stride, arch): ...

What every block shares (squeeze-excitation on the output, the shortcut, the
final ReLU) is network-level and added around the block's residual branch.
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

    @abstractmethod
    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        """The residual branch's weighted layers for a ``size``-pixel input."""

    @abstractmethod
    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig) -> nn.Module:
        """The block as a `models.modules.Residual` (SE and shortcut from ``arch``)."""

    def check_width(self, width: int) -> str | None:
        """What is wrong with ``width`` output channels for this block, or None."""
        return None

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


@register_block
@dataclass(frozen=True)
class Basic(Block):
    """Two kxk convs; the first carries the stride."""

    name: ClassVar[str] = "basic"

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        out = conv_out_size(size, stride)
        yield Layer(c_in, c_out, kernel, out)
        yield Layer(c_out, c_out, kernel, out)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig) -> nn.Module:
        from models.modules import BasicBlock

        return BasicBlock(c_in, c_out, kernel, stride, arch)


@register_block
@dataclass(frozen=True)
class Bottleneck(Block):
    """1x1 down to width/expansion, kxk (carrying the stride), 1x1 up to width."""

    name: ClassVar[str] = "bottleneck"
    expansion: int = 4  # stage width / inner width

    def __post_init__(self) -> None:
        if not 1 <= self.expansion <= MAX_WIDTH:  # an inner width of >= 1 channel needs this
            raise ConfigError("expansion", self.expansion,
                              "must be >= 1" if self.expansion < 1 else f"must be <= {MAX_WIDTH}")

    def check_width(self, width: int) -> str | None:
        if width % self.expansion:
            return f"must be a multiple of expansion={self.expansion} for bottleneck blocks"
        return None

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        inner = c_out // self.expansion
        out = conv_out_size(size, stride)
        yield Layer(c_in, inner, 1, size)
        yield Layer(inner, inner, kernel, out)
        yield Layer(inner, c_out, 1, out)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig) -> nn.Module:
        from models.modules import BottleneckBlock

        return BottleneckBlock(c_in, c_out, kernel, stride, arch, self.expansion)
