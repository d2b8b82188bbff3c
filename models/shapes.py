"""Geometry shared by the config, the counter, the builder and the search space.

Each rule about sizes is written here once: the input side, what a strided conv
does to it, the stride each stage of a searched network gets, the hidden width of
a squeeze-excitation gate, and `Layer`, the unit of the exact count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

INPUT_SIZE = 32  # side of a CIFAR-10 image, pixels
KERNEL_SIZES = (1, 3, 5, 7)
MAX_WIDTH = 4096  # channels; far past anything a 5M budget admits, catches typos


class Layer(NamedTuple):
    """One weighted layer: a conv (bias-free unless noted), the classifier, or (kernel 0)
    a batch norm on its own."""

    c_in: int
    c_out: int
    kernel: int  # 0: no conv, only the batch norm (pre-activation blocks begin with one)
    out_size: int  # spatial side of the output
    bias: bool = False
    bn: bool = True  # followed by a BatchNorm2d (2 parameters per channel)
    groups: int = 1  # grouped conv (ResNeXt cardinality): c_in / groups inputs per output


def norm_only(channels: int) -> Layer:
    """A BatchNorm2d with no conv before it: 2 parameters per channel, no FLOPs counted."""
    return Layer(channels, channels, 0, 0)


def conv_out_size(size: int, stride: int) -> int:
    """Spatial side after a 'same'-padded odd-kernel conv (or pool) of ``stride``."""
    return -(-size // stride)


def feature_sizes(strides: Iterable[int]) -> list[int]:
    """Side of the feature map after the stem and after each stage of ``strides``."""
    sizes = [INPUT_SIZE]
    for stride in strides:
        sizes.append(conv_out_size(sizes[-1], stride))
    return sizes


def stage_stride(index: int) -> int:
    """The CIFAR layout: stage 0 keeps the resolution, each later stage halves it."""
    return 1 if index == 0 else 2


def se_channels(width: int, ratio: float) -> int:
    """Hidden channels of a squeeze-excitation gate on ``width`` channels."""
    return max(1, int(width * ratio + 0.5))
