"""Where every block of a network sits: its input and output widths, stride, input side
and branch-drop rate.

The builder (`models.builder`) and the exact counter (`models.counting`) both walk
`sites`, so the geometry of a network is computed once: a PyramidNet stage's
widths grow block by block (`models.blocks.Block.widths`), and stochastic depth and
ShakeDrop drop the residual branch of block l of L at ``branch_drop_rate * l / L``,
the linear rule of Huang et al. (2016) and Yamada et al. (2018).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from models.shapes import INPUT_SIZE, conv_out_size

if TYPE_CHECKING:
    from models.blocks import Block
    from models.config import ArchConfig


class Site(NamedTuple):
    """One residual block's place in the network."""

    stage: int  # index of its stage
    in_stage: int  # index within the stage
    block: Block
    c_in: int  # input channels
    c_out: int  # output channels
    kernel: int  # side of its spatial convs
    stride: int
    size: int  # side of its input feature map
    drop: float  # probability that its residual branch is dropped in training


def sites(arch: ArchConfig) -> Iterator[Site]:
    """Every residual block of ``arch``, in forward order."""
    total = sum(s.blocks for s in arch.stages)
    c_in = base = arch.stem_width
    size, position = INPUT_SIZE, 0
    for i, (stage, block) in enumerate(zip(arch.stages, arch.stage_blocks(), strict=True)):
        for j, c_out in enumerate(block.widths(base, stage.width, stage.blocks)):
            stride = stage.stride if j == 0 else 1
            position += 1
            yield Site(i, j, block, c_in, c_out, stage.kernel, stride, size,
                       arch.branch_drop_rate * position / total)
            c_in, size, base = c_out, conv_out_size(size, stride), block.base_width(c_out)
