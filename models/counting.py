"""Exact parameter and FLOP counts of an `ArchConfig`, without building it.

Both walk the network the way `models.builder` builds it. The tests hold
`count_params` to ``sum(p.numel())`` of the built model and `count_flops` to
PyTorch's own FLOP counter, over hundreds of random configs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from models.config import INPUT_SIZE, ArchConfig, conv_out_size, se_channels


class Layer(NamedTuple):
    """One weighted layer: a conv (bias-free unless noted) or the classifier."""

    c_in: int
    c_out: int
    kernel: int
    out_size: int  # spatial side of the output
    bias: bool = False
    bn: bool = True  # followed by a BatchNorm2d (2 parameters per channel)


def layers(arch: ArchConfig, num_classes: int = 10) -> Iterator[Layer]:
    """Every weighted layer of the network, in forward order."""
    size = INPUT_SIZE
    yield Layer(3, arch.stem_width, arch.stem_kernel, size)
    c_in = arch.stem_width
    for stage in arch.stages:
        for i in range(stage.blocks):
            stride = stage.stride if i == 0 else 1
            out = conv_out_size(size, stride)
            w = stage.width
            if arch.block_type == "basic":
                yield Layer(c_in, w, stage.kernel, out)
                yield Layer(w, w, stage.kernel, out)
            else:
                inner = w // arch.expansion
                yield Layer(c_in, inner, 1, size)
                yield Layer(inner, inner, stage.kernel, out)
                yield Layer(inner, w, 1, out)
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
