"""`build_model`: an `ArchConfig` made into a `torch.nn.Module`.

Each stage's blocks are built by their registered block type
(`models.blocks.Block.build`); pooling is chosen by name through small tables.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ArchConfig
from models.modules import BasicBlock, BottleneckBlock, SqueezeExcite, conv_bn, make_shortcut
from models.plan import sites

__all__ = ["BasicBlock", "BottleneckBlock", "ResNet", "SqueezeExcite", "build_model", "conv_bn",
           "make_shortcut"]

GLOBAL_POOLS: dict[str, type[nn.Module]] = {
    "avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d,
}
WINDOW_POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class ResNet(nn.Module):
    """Stem, stages, pooled linear head. ``arch`` is kept for checkpoints."""

    def __init__(self, arch: ArchConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.arch = arch
        blocks = arch.stage_blocks()
        # A pre-activation first block normalises and activates the stem's output itself.
        stem_act = [] if blocks[0].preact else [nn.ReLU()]
        self.stem = nn.Sequential(conv_bn(3, arch.stem_width, arch.stem_kernel), *stem_act)
        stages: list[list[nn.Module]] = [[] for _ in arch.stages]
        for site in sites(arch):
            stages[site.stage].append(site.block.build(site.c_in, site.c_out, site.kernel,
                                                       site.stride, arch, site.drop))
        self.stages = nn.Sequential(*(nn.Sequential(*stage) for stage in stages))
        width = arch.stages[-1].width  # pre-activation networks end with BN-ReLU
        self.head_norm = (nn.Sequential(nn.BatchNorm2d(width), nn.ReLU()) if blocks[-1].preact
                          else nn.Identity())
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
        x = self.head_norm(self.stages(self.stem(x)))
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
