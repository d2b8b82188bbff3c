"""Exact parameter and FLOP counts of an `ArchConfig`, without building it.

Both walk the network the way `models.builder` builds it, over the same block
sites (`models.plan.sites`): the stem, each block's residual branch as its
registered type yields it (`models.blocks.Block.layers`), the squeeze-excitation
gate every block shares, the block's shortcut (`Block.shortcut_layers`), and the
head (with its batch norm where the last blocks are pre-activation). The
tests hold `count_params` to ``sum(p.numel())`` of the built model and
`count_flops` to PyTorch's own FLOP counter, over hundreds of random configs.
"""

from __future__ import annotations

from collections.abc import Iterator

from models.config import ArchConfig
from models.plan import sites
from models.shapes import INPUT_SIZE, Layer, norm_only, se_channels

__all__ = ["Layer", "count_flops", "count_params", "layers"]


def layers(arch: ArchConfig, num_classes: int = 10) -> Iterator[Layer]:
    """Every weighted layer of the network (and every batch norm), in forward order."""
    yield Layer(3, arch.stem_width, arch.stem_kernel, INPUT_SIZE)
    for site in sites(arch):
        w = site.c_out
        yield from site.block.layers(site.c_in, w, site.kernel, site.stride, site.size)
        if arch.se_ratio:
            hidden = se_channels(w, arch.se_ratio)
            yield Layer(w, hidden, 1, 1, bias=True, bn=False)
            yield Layer(hidden, w, 1, 1, bias=True, bn=False)
        yield from site.block.shortcut_layers(site.c_in, w, site.stride, site.size, arch)
    if arch.stage_blocks()[-1].preact:  # pre-activation networks end with BN-ReLU
        yield norm_only(arch.stages[-1].width)
    yield Layer(arch.head_features(), num_classes, 1, 1, bias=True, bn=False)


def count_params(arch: ArchConfig, num_classes: int = 10) -> int:
    """Trainable parameters of ``build_model(arch)``, exactly."""
    total = 0
    for layer in layers(arch, num_classes):
        total += layer.c_in * layer.c_out * layer.kernel**2 // layer.groups
        total += layer.c_out * (int(layer.bias) + 2 * int(layer.bn))
    return total


def count_flops(arch: ArchConfig, num_classes: int = 10) -> int:
    """Forward FLOPs for one 32x32 image, 2 per multiply-add.

    Counts convolutions and the linear layer (as PyTorch's FLOP counter does);
    batch norm, activations, pooling, additions and biases are not counted.
    """
    return sum(
        2 * layer.c_in * layer.c_out * layer.kernel**2 * layer.out_size**2 // layer.groups
        for layer in layers(arch, num_classes)
    )
