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
        def build(self, c_in, c_out, kernel, stride, arch, drop=0.0): ...

What every block shares (squeeze-excitation on the output, the branch drop, the
shortcut, the final ReLU of post-activation blocks) is added around the block's
residual branch by `models.modules.Residual`. A block type says how it differs
from the post-activation default with a few hooks: `Block.preact` (the network's
stem, sum and head follow it), `Block.widths` (PyramidNet's growing widths) and
`Block.shortcut_layers` (zero-padded or BN-free shortcuts). The base class and
`BLOCKS` live in `models.registry`; the entries beyond basic and bottleneck in
`models.blocks_preact` and `models.blocks_shake`, which this module imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from models.registry import (
    BLOCKS,
    Block,
    block_from_dict,
    block_names,
    bottleneck_width_problem,
    check_block_type,
    check_expansion,
    check_groups,
    register_block,
    unregister_block,
)
from models.shapes import Layer, conv_out_size

if TYPE_CHECKING:
    from torch import nn

    from models.config import ArchConfig

__all__ = ["BLOCKS", "Basic", "Block", "Bottleneck", "block_from_dict", "block_names",
           "check_block_type", "register_block", "unregister_block"]


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
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import BasicBlock

        return BasicBlock(c_in, c_out, kernel, stride, arch, drop)


@register_block
@dataclass(frozen=True)
class Bottleneck(Block):
    """1x1 down to width/expansion, kxk (carrying the stride, in ``groups`` groups as in
    ResNeXt), 1x1 up to width."""

    name: ClassVar[str] = "bottleneck"
    expansion: int = 4  # stage width / inner width
    groups: int = 1  # groups of the kxk conv (ResNeXt cardinality); 1 = a plain conv

    def __post_init__(self) -> None:
        check_expansion(self.expansion)
        check_groups(self.groups)

    def check_width(self, width: int) -> str | None:
        return bottleneck_width_problem(self, width, self.expansion, self.groups)

    def base_width(self, width: int) -> int:
        return width // self.expansion

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        inner = c_out // self.expansion
        out = conv_out_size(size, stride)
        yield Layer(c_in, inner, 1, size)
        yield Layer(inner, inner, kernel, out, groups=self.groups)
        yield Layer(inner, c_out, 1, out)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import BottleneckBlock

        return BottleneckBlock(c_in, c_out, kernel, stride, arch, drop, self.expansion,
                               self.groups)


# The other families register after these two, so `block_names()` starts with the classics.
import models.blocks_preact  # noqa: E402
import models.blocks_shake  # noqa: E402, F401
