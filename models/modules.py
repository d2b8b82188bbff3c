"""The torch modules the registered block types build (`models.blocks`).

Attribute names (``conv1``, ``se``, ``shortcut``, ...) are the keys of saved
weights; they must not change, or older ``model.pt`` files stop loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from models.shapes import se_channels
from models.stochastic import BRANCH_DROPS, shake_mix

if TYPE_CHECKING:
    from models.config import ArchConfig


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free 'same'-padded conv."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                     bias=False)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1,
            groups: int = 1) -> nn.Sequential:
    """A bias-free 'same'-padded conv followed by batch norm."""
    return nn.Sequential(conv(c_in, c_out, kernel, stride, groups), nn.BatchNorm2d(c_out))


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


def make_shortcut(c_in: int, c_out: int, stride: int, arch: ArchConfig,
                  norm: bool = True) -> nn.Module:
    """Identity where the shape is kept, else a projection (conv + BN; without BN for
    pre-activation blocks, ``norm=False``)."""
    if c_in == c_out and stride == 1:
        return nn.Identity()
    make = conv_bn if norm else conv
    projection = make(c_in, c_out, arch.shortcut_kernel, 1 if arch.shortcut_pool else stride)
    if arch.shortcut_pool and stride > 1:
        # ResNet-D: average the skipped pixels instead of dropping 3 in 4 of them.
        return nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), projection)
    return projection


class ZeroPadShortcut(nn.Module):
    """PyramidNet's shortcut: the input, average-pooled where strided, with zero channels
    appended up to the output width."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra = c_out - c_in
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                     if stride > 1 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class Residual(nn.Module):
    """``relu(drop(se(branch(x))) + shortcut(x))``; pre-activation blocks skip the ReLU
    and may feed the shortcut their pre-activated input. Subclasses make their convs,
    then call `finish`."""

    se: SqueezeExcite | None
    drop: nn.Module | None

    def finish(self, c_in: int, c_out: int, stride: int, arch: ArchConfig, drop: float,
               shortcut: nn.Module | None = None, relu: bool = True) -> None:
        """Add the network-level parts: the SE gate (if any), the branch drop (if any)
        and the shortcut (a projection where the shape changes, unless given)."""
        self.se = SqueezeExcite(c_out, se_channels(c_out, arch.se_ratio)) if arch.se_ratio else None
        self.drop = BRANCH_DROPS[arch.branch_drop](drop) if arch.branch_drop != "none" else None
        self.shortcut = shortcut if shortcut is not None else make_shortcut(c_in, c_out, stride,
                                                                            arch)
        self.relu = relu

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the residual branch's output, the shortcut's input)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, skip = self.branch(x)
        if self.se is not None:
            out = self.se(out)
        if self.drop is not None:
            out = self.drop(out)
        out = out + self.shortcut(skip)
        return torch.relu(out) if self.relu else out


class BasicBlock(Residual):
    """Two kxk convs; the first carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv_bn(c_out, c_out, kernel)
        self.finish(c_in, c_out, stride, arch, drop)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv2(torch.relu(self.conv1(x))), x


class BottleneckBlock(Residual):
    """1x1 down to width/expansion, kxk (carrying the stride, grouped), 1x1 up to width."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0, expansion: int = 4, groups: int = 1) -> None:
        super().__init__()
        inner = c_out // expansion
        self.conv1 = conv_bn(c_in, inner, 1)
        self.conv2 = conv_bn(inner, inner, kernel, stride, groups)
        self.conv3 = conv_bn(inner, c_out, 1)
        self.finish(c_in, c_out, stride, arch, drop)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return out, x


class PreActBlock(Residual):
    """BN-ReLU-conv, BN-ReLU-conv; a projection shortcut sees the pre-activated input."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv(c_out, c_out, kernel)
        self.finish(c_in, c_out, stride, arch, drop,
                    make_shortcut(c_in, c_out, stride, arch, norm=False), relu=False)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.conv1(act)))
        return out, x if isinstance(self.shortcut, nn.Identity) else act


class PreActBottleneckBlock(Residual):
    """BN-ReLU-1x1, BN-ReLU-kxk (stride, grouped), BN-ReLU-1x1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0, expansion: int = 4, groups: int = 1) -> None:
        super().__init__()
        inner = c_out // expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv_bn(c_in, inner, 1)
        self.conv2 = conv_bn(inner, inner, kernel, stride, groups)
        self.conv3 = conv(inner, c_out, 1)
        self.finish(c_in, c_out, stride, arch, drop,
                    make_shortcut(c_in, c_out, stride, arch, norm=False), relu=False)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = torch.relu(self.bn1(x))
        out = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(act)))))
        return out, x if isinstance(self.shortcut, nn.Identity) else act


def pyramid_shortcut(c_in: int, c_out: int, stride: int, arch: ArchConfig) -> nn.Module:
    """Zero-padded identity where the width grows or stays, a projection where it narrows."""
    if c_out < c_in:
        return make_shortcut(c_in, c_out, stride, arch)
    if c_out == c_in and stride == 1:
        return nn.Identity()
    return ZeroPadShortcut(c_in, c_out, stride)


class PyramidBlock(Residual):
    """BN-conv-BN-ReLU-conv-BN (no ReLU first, as in PyramidNet)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv_bn(c_out, c_out, kernel)
        self.finish(c_in, c_out, stride, arch, drop,
                    pyramid_shortcut(c_in, c_out, stride, arch), relu=False)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv2(torch.relu(self.conv1(self.bn1(x)))), x


class PyramidBottleneckBlock(Residual):
    """BN-1x1-BN-ReLU-kxk (stride)-BN-ReLU-1x1-BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0, expansion: int = 4) -> None:
        super().__init__()
        inner = c_out // expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv_bn(c_in, inner, 1)
        self.conv2 = conv_bn(inner, inner, kernel, stride)
        self.conv3 = conv_bn(inner, c_out, 1)
        self.finish(c_in, c_out, stride, arch, drop,
                    pyramid_shortcut(c_in, c_out, stride, arch), relu=False)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(self.bn1(x))))))
        return out, x


class ShakeBlock(Residual):
    """Two ReLU-conv-BN-ReLU-conv-BN branches mixed by `models.stochastic.shake_mix`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig,
                 drop: float = 0.0, backward: bool = True, per_image: bool = True) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(nn.ReLU(), conv_bn(c_in, c_out, kernel, stride), nn.ReLU(),
                                     conv_bn(c_out, c_out, kernel))
        self.branch2 = nn.Sequential(nn.ReLU(), conv_bn(c_in, c_out, kernel, stride), nn.ReLU(),
                                     conv_bn(c_out, c_out, kernel))
        self.shake_backward, self.per_image = backward, per_image
        self.finish(c_in, c_out, stride, arch, drop, relu=False)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = shake_mix(self.branch1(x), self.branch2(x), training=self.training,
                        backward=self.shake_backward, per_image=self.per_image)
        return out, x
