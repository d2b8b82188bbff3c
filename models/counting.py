"""Exact parameter and FLOP counts of an `ArchConfig`, without building it.

Both walk the network the way `models.builder` builds it: the stem, each block's
residual branch as its registered type yields it (`models.blocks.Block.layers`),
the squeeze-excitation gate and shortcut every block shares, and the head. The
tests hold `count_params` to ``sum(p.numel())`` of the built model and
`count_flops` to PyTorch's own FLOP counter, over hundreds of random configs.
"""

from __future__ import annotations

from collections.abc import Iterator

from models.config import ArchConfig
from models.shapes import INPUT_SIZE, Layer, conv_out_size, se_channels

__all__ = ["Layer", "count_flops", "count_params", "layers"]


def layers(arch: ArchConfig, num_classes: int = 10) -> Iterator[Layer]:
    """Every weighted layer of the network, in forward order."""
    size = INPUT_SIZE
    yield Layer(3, arch.stem_width, arch.stem_kernel, size)
    c_in = arch.stem_width
    for stage, block in zip(arch.stages, arch.stage_blocks(), strict=True):
        w = stage.width
        for i in range(stage.blocks):
            stride = stage.stride if i == 0 else 1
            out = conv_out_size(size, stride)
            yield from block.layers(c_in, w, stage.kernel, stride, size)
            if arch.se_ratio:
                hidden = se_channels(w, arch.se_ratio)
                yield Layer(w, hidden, 1, 1, bias=True, bn=False)
                yield Layer(hidden, w, 1, 1, bias=True, bn=False)
            if c_in != w or stride != 1:
                yield Layer(c_in, w, arch.shortcut_kernel, out)
            c_in, size = w, out
    yield Layer(arch.head_features(), num_classes, 1, 1, bias=True, bn=False)


def count_params(arch: ArchConfig, num_classes: int = 10) -> int:
    """Trainable parameters of ``build_model(arch)``, exactly."""
    total = 0
    for layer in layers(arch, num_classes):
        total += layer.c_in * layer.c_out * layer.kernel**2
        total += layer.c_out * (int(layer.bias) + 2 * int(layer.bn))
    return total


def count_flops(arch: ArchConfig, num_classes: int = 10) -> int:
    """Forward FLOPs for one 32x32 image, 2 per multiply-add.

    Counts convolutions and the linear layer (as PyTorch's FLOP counter does);
    batch norm, activations, pooling, additions and biases are not counted.
    """
    return sum(
        2 * layer.c_in * layer.c_out * layer.kernel**2 * layer.out_size**2
        for layer in layers(arch, num_classes)
    )
