"""Shake-Shake (Gastaldi 2017): two residual branches mixed at random.

In training the two branches are mixed with a random weight alpha per image in
the forward pass and an independent random weight beta in the backward pass; in
evaluation with 0.5/0.5 (the expected weight). Each branch is ReLU-kxk conv-BN-
ReLU-kxk conv-BN; the sum takes no ReLU, so the network follows the
pre-activation layout (stem without ReLU, BN-ReLU before pooling).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from models.registry import Block, register_block
from models.shapes import Layer, conv_out_size

if TYPE_CHECKING:
    from torch import nn

    from models.config import ArchConfig


@register_block
@dataclass(frozen=True)
class Shake(Block):
    """Two branches of ReLU-conv-BN-ReLU-conv-BN, mixed by Shake-Shake."""

    name: ClassVar[str] = "shake"
    preact: ClassVar[bool] = True
    shake_backward: bool = True  # an independent weight backward ("Shake-Shake"); else "Keep"
    shake_image: bool = True  # a weight per image ("Image" level); else one per batch

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        out = conv_out_size(size, stride)
        for _ in range(2):
            yield Layer(c_in, c_out, kernel, out)
            yield Layer(c_out, c_out, kernel, out)

    def build(self, c_in: int, c_out: int, kernel: int, stride: int,
              arch: ArchConfig, drop: float = 0.0) -> nn.Module:
        from models.modules import ShakeBlock

        return ShakeBlock(c_in, c_out, kernel, stride, arch, drop, self.shake_backward,
                          self.shake_image)
