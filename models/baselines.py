"""Named reference architectures: warm-start trials, test cases, yardsticks.

All use projection (conv + BN) shortcuts where the shape changes, so the classic
CIFAR ResNets here count slightly more parameters than the zero-padding
("option A") versions in He et al. (2015): ResNet-20 has 272,474 here against
the paper's 0.27M.
"""

from __future__ import annotations

import warnings

from models.blocks import Block, Bottleneck
from models.config import DEFAULT_BLOCK, ArchConfig, StageConfig
from models.shapes import stage_stride

BASELINES: dict[str, ArchConfig] = {}


def register(name: str, arch: ArchConfig) -> ArchConfig:
    """Add ``arch`` to `BASELINES` under ``name``; a second use of a name warns."""
    if name in BASELINES:
        warnings.warn(f"baseline {name!r} registered twice; the later one wins", stacklevel=2)
    BASELINES[name] = arch
    return arch


def three_stage(
    blocks: tuple[int, int, int],
    widths: tuple[int, int, int],
    *,
    stem_width: int,
    block: Block = DEFAULT_BLOCK,
) -> ArchConfig:
    """The CIFAR layout: 3x3 stem, stages at 32, 16 and 8 pixels, global average pool."""
    stages = tuple(
        StageConfig(blocks=b, width=w, kernel=3, stride=stage_stride(i))
        for i, (b, w) in enumerate(zip(blocks, widths, strict=True))
    )
    return ArchConfig(stages=stages, stem_width=stem_width, block=block)


# The network whose published count (4,697,162) pins the counting down.
register("resnet-443", three_stage((4, 4, 3), (64, 128, 256), stem_width=64))
# He et al. (2015), section 4.2: 6n+2 layers, widths 16/32/64.
register("resnet-20", three_stage((3, 3, 3), (16, 32, 64), stem_width=16))
register("resnet-56", three_stage((9, 9, 9), (16, 32, 64), stem_width=16))
register("resnet-110", three_stage((18, 18, 18), (16, 32, 64), stem_width=16))
# ResNet-8 (n=1) at half width: small enough for the CPU smoke study's budget.
register("resnet-8-half", three_stage((1, 1, 1), (8, 16, 32), stem_width=8))
# ResNet-18's widths on three stages; 3+3+2 blocks keep its 18 weighted layers.
register("resnet-18-3stage", three_stage((3, 3, 2), (64, 128, 256), stem_width=64))
# He et al. (2016): 164 layers of bottleneck blocks, inner widths 16/32/64.
register(
    "resnet-164",
    three_stage((18, 18, 18), (64, 128, 256), stem_width=16, block=Bottleneck()),
)
# Zagoruyko & Komodakis (2016) WRN-16-4 layout (post-activation here).
register("wrn-16-4", three_stage((2, 2, 2), (64, 128, 256), stem_width=16))
