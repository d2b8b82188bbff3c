"""The torch modules the registered block types build (`models.blocks`).

Attribute names (``conv1``, ``se``, ``shortcut``, ...) are the keys of saved
weights; they must not change, or older ``model.pt`` files stop loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from models.shapes import se_channels

if TYPE_CHECKING:
    from models.config import ArchConfig


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A bias-free 'same'-padded conv followed by batch norm."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class SqueezeExcite(nn.Module):
    """Channel gate: global average, 1x1 conv, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        gate = self.expand(torch.relu(self.reduce(gate)))
        return x * torch.sigmoid(gate)


def make_shortcut(c_in: int, c_out: int, stride: int, arch: ArchConfig) -> nn.Module:
    """Identity where the shape is kept, else a projection (conv + BN)."""
    if c_in == c_out and stride == 1:
        return nn.Identity()
    if arch.shortcut_pool and stride > 1:
        # ResNet-D: average the skipped pixels instead of dropping 3 in 4 of them.
        return nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
            conv_bn(c_in, c_out, arch.shortcut_kernel),
        )
    return conv_bn(c_in, c_out, arch.shortcut_kernel, stride)


class Residual(nn.Module):
    """``relu(se(branch(x)) + shortcut(x))``: subclasses make their convs, then `finish`."""

    se: SqueezeExcite | None

    def finish(self, c_in: int, c_out: int, stride: int, arch: ArchConfig) -> None:
        """Add the network-level parts: the SE gate (if any) and the shortcut."""
        self.se = SqueezeExcite(c_out, se_channels(c_out, arch.se_ratio)) if arch.se_ratio else None
        self.shortcut = make_shortcut(c_in, c_out, stride, arch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.se is not None:
            out = self.se(out)
        return torch.relu(out + self.shortcut(x))


class BasicBlock(Residual):
    """Two kxk convs; the first carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv_bn(c_out, c_out, kernel)
        self.finish(c_in, c_out, stride, arch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class BottleneckBlock(Residual):
    """1x1 down to width/expansion, kxk (carrying the stride), 1x1 up to width."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 expansion: int) -> None:
        super().__init__()
        inner = c_out // expansion
        self.conv1 = conv_bn(c_in, inner, 1)
        self.conv2 = conv_bn(inner, inner, kernel, stride)
        self.conv3 = conv_bn(inner, c_out, 1)
        self.finish(c_in, c_out, stride, arch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
