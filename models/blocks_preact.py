"""Pre-activation block types: He et al. (2016b) / WRN, and PyramidNet (Han et al. 2017).

Pre-activation blocks put batch norm (and ReLU) before each conv and leave the
residual sum alone; the network then ends with BN-ReLU before pooling
(`Block.preact`). Their projection shortcut is a conv without batch norm on the
block's pre-activated input, as in the papers' code.

PyramidNet blocks widen the network a little at every block instead of doubling
it at each stage: a stage's blocks ramp linearly from the width before the stage
to the stage's width, so three stages of n blocks with widths
``stem + alpha * (1, 2, 3) / 3`` are the paper's additive widening by alpha/3n
per block. Their shortcut is the identity, average-pooled where strided and
padded with zero channels (the paper's choice); where a stage narrows instead,
it is a projection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from models.registry import (
    Block,
    bottleneck_width_problem,
    check_expansion,
    check_groups,
    register_block,
)
from models.shapes import Layer, conv_out_size, norm_only

if TYPE_CHECKING:
    from torch import nn

    from models.config import ArchConfig


@register_block
@dataclass(frozen=True)
class PreAct(Block):
    """BN-ReLU-kxk conv (carrying the stride), BN-ReLU-kxk conv: WRN's block."""

    name: ClassVar[str] = "preact"
    preact: ClassVar[bool] = True

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        out = conv_out_size(size, stride)
        yield norm_only(c_in)
        yield Layer(c_in, c_out, kernel, out)
        yield Layer(c_out, c_out, kernel, out, bn=False)

    def shortcut_layers(self, c_in: int, c_out: int, stride: int, size: int,
                        arch: ArchConfig) -> Iterator[Layer]:
        if c_in != c_out or stride != 1:
            yield Layer(c_in, c_out, arch.shortcut_kernel, conv_out_size(size, stride), bn=False)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import PreActBlock

        return PreActBlock(c_in, c_out, kernel, stride, arch, drop)


@register_block
@dataclass(frozen=True)
class PreActBottleneck(PreAct):
    """BN-ReLU-1x1 down to width/expansion, BN-ReLU-kxk (stride, ``groups`` groups),
    BN-ReLU-1x1 up to width: pre-activation ResNet-164's block."""

    name: ClassVar[str] = "preact_bottleneck"
    expansion: int = 4  # stage width / inner width
    groups: int = 1  # groups of the kxk conv (ResNeXt cardinality)

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
        yield norm_only(c_in)
        yield Layer(c_in, inner, 1, size)
        yield Layer(inner, inner, kernel, out, groups=self.groups)
        yield Layer(inner, c_out, 1, out, bn=False)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import PreActBottleneckBlock

        return PreActBottleneckBlock(c_in, c_out, kernel, stride, arch, drop,
                                     self.expansion, self.groups)


def ramp(start: int, end: int, blocks: int) -> list[int]:
    """``blocks`` widths growing linearly from ``start`` (excluded) to ``end`` (reached),
    each rounded half up in integer arithmetic, so every machine agrees."""
    return [start + (2 * (end - start) * j + blocks) // (2 * blocks)
            for j in range(1, blocks + 1)]


@register_block
@dataclass(frozen=True)
class Pyramid(Block):
    """BN-kxk conv (stride)-BN-ReLU-kxk conv-BN, widths ramped across the stage."""

    name: ClassVar[str] = "pyramid"
    preact: ClassVar[bool] = True

    def widths(self, start: int, width: int, blocks: int) -> list[int]:
        return ramp(start, width, blocks)

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        out = conv_out_size(size, stride)
        yield norm_only(c_in)
        yield Layer(c_in, c_out, kernel, out)
        yield Layer(c_out, c_out, kernel, out)

    def shortcut_layers(self, c_in: int, c_out: int, stride: int, size: int,
                        arch: ArchConfig) -> Iterator[Layer]:
        if c_out < c_in:  # zero padding cannot narrow
            yield from super().shortcut_layers(c_in, c_out, stride, size, arch)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import PyramidBlock

        return PyramidBlock(c_in, c_out, kernel, stride, arch, drop)


@register_block
@dataclass(frozen=True)
class PyramidBottleneck(Pyramid):
    """BN-1x1 down-BN-ReLU-kxk (stride)-BN-ReLU-1x1 up-BN; the inner widths ramp and the
    output is ``expansion`` times the inner width (PyramidNet-164's block)."""

    name: ClassVar[str] = "pyramid_bottleneck"
    expansion: int = 4  # output width / inner width

    def __post_init__(self) -> None:
        check_expansion(self.expansion)

    def check_width(self, width: int) -> str | None:
        return bottleneck_width_problem(self, width, self.expansion)

    def widths(self, start: int, width: int, blocks: int) -> list[int]:
        return [inner * self.expansion
                for inner in ramp(start, width // self.expansion, blocks)]

    def base_width(self, width: int) -> int:
        return width // self.expansion

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        inner = c_out // self.expansion
        out = conv_out_size(size, stride)
        yield norm_only(c_in)
        yield Layer(c_in, inner, 1, size)
        yield Layer(inner, inner, kernel, out)
        yield Layer(inner, c_out, 1, out)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import PyramidBottleneckBlock

        return PyramidBottleneckBlock(c_in, c_out, kernel, stride, arch, drop, self.expansion)
