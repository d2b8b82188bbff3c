"""`build_model`: an `ArchConfig` made into a `torch.nn.Module`.

Layers are chosen by name through small tables, so the builder and the analytic
counter in `models.counting` read the config the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ArchConfig, se_channels


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


class BasicBlock(nn.Module):
    """Two kxk convs; the first carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv_bn(c_out, c_out, kernel)
        self.se = SqueezeExcite(c_out, se_channels(c_out, arch.se_ratio)) if arch.se_ratio else None
        self.shortcut = make_shortcut(c_in, c_out, stride, arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        if self.se is not None:
            out = self.se(out)
        return torch.relu(out + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 down to width/expansion, kxk (carrying the stride), 1x1 up to width."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: ArchConfig) -> None:
        super().__init__()
        inner = c_out // arch.expansion
        self.conv1 = conv_bn(c_in, inner, 1)
        self.conv2 = conv_bn(inner, inner, kernel, stride)
        self.conv3 = conv_bn(inner, c_out, 1)
        self.se = SqueezeExcite(c_out, se_channels(c_out, arch.se_ratio)) if arch.se_ratio else None
        self.shortcut = make_shortcut(c_in, c_out, stride, arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv1(x))
        out = self.conv3(torch.relu(self.conv2(out)))
        if self.se is not None:
            out = self.se(out)
        return torch.relu(out + self.shortcut(x))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": BottleneckBlock}
GLOBAL_POOLS: dict[str, type[nn.Module]] = {
    "avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d,
}
WINDOW_POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class ResNet(nn.Module):
    """Stem, stages, pooled linear head. ``arch`` is kept for checkpoints."""

    def __init__(self, arch: ArchConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.arch = arch
        self.stem = nn.Sequential(conv_bn(3, arch.stem_width, arch.stem_kernel), nn.ReLU())
        block = BLOCKS[arch.block_type]
        stages: list[nn.Module] = []
        c_in = arch.stem_width
        for stage in arch.stages:
            blocks = []
            for i in range(stage.blocks):
                stride = stage.stride if i == 0 else 1
                blocks.append(block(c_in, stage.width, stage.kernel, stride, arch))
                c_in = stage.width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if arch.pool_kernel is None:
            self.pool = GLOBAL_POOLS[arch.pool](1)
        else:
            self.pool = WINDOW_POOLS[arch.pool](arch.pool_kernel, arch.pool_kernel)
        self.dropout = nn.Dropout(arch.dropout) if arch.dropout else nn.Identity()
        self.fc = nn.Linear(arch.head_features(), num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.fc.weight.is_meta:
            return  # nothing to fill, and random init on meta tensors is slow
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def build_model(
    arch: ArchConfig, *, num_classes: int = 10, device: torch.device | str | None = None
) -> ResNet:
    """Build the network ``arch`` describes, for 3x32x32 inputs.

    Args:
        arch: the architecture.
        num_classes: outputs of the final linear layer.
        device: where the parameters live; ``"meta"`` allocates no memory, which
            makes shape and size checks free.
    """
    if device is None:
        return ResNet(arch, num_classes)
    with torch.device(device):
        return ResNet(arch, num_classes)
