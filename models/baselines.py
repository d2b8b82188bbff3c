"""Named reference architectures: warm-start trials, test cases, yardsticks.

Each published one carries the paper's parameter figure and CIFAR-10 accuracy
(`Paper`), which `search baselines` prints beside our exact count. Where the
shape changes, the classic CIFAR ResNets here use projection (conv + BN)
shortcuts, so they count slightly more parameters than the zero-padding
("option A") versions in He et al. (2015): ResNet-20 has 272,474 here against
the paper's 0.27M. Pre-activation networks here have a batch norm on the stem
(the papers' stems are a bare conv): 32 parameters more.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from models.blocks import Block, Bottleneck
from models.blocks_preact import PreAct, PreActBottleneck, Pyramid, PyramidBottleneck
from models.blocks_shake import Shake
from models.config import DEFAULT_BLOCK, ArchConfig, StageConfig
from models.shapes import stage_stride

BASELINES: dict[str, ArchConfig] = {}


@dataclass(frozen=True)
class Paper:
    """What a paper reports for a baseline, to set beside our count."""

    params: int | None  # the paper's (rounded) parameter figure; None: it gives none
    accuracy: str  # CIFAR-10 test accuracy reported, with its conditions
    source: str
    note: str = ""  # why our count differs from ``params``, where it does by over 2%
    # An independent implementation's exact count (the CIFAR-10 table of osmr's
    # imgclsmob/pytorchcv), which ours equals up to `reference_difference`.
    reference_params: int | None = None


def reference_difference(arch: ArchConfig) -> int:
    """What our count of ``arch`` adds to the reference implementations': the batch norm
    of a pre-activation stem (theirs is a bare conv), and Shake-Shake's head batch norm
    (theirs ends with ReLU alone)."""
    blocks = arch.stage_blocks()
    extra = 0
    if blocks[0].name in ("preact", "preact_bottleneck"):
        extra += 2 * arch.stem_width
    if blocks[-1].name == "shake":
        extra += 2 * arch.stages[-1].width
    return extra


PAPERS: dict[str, Paper] = {}


def register(name: str, arch: ArchConfig, paper: Paper | None = None) -> ArchConfig:
    """Add ``arch`` to `BASELINES` under ``name`` (and ``paper`` to `PAPERS`); a second
    use of a name warns."""
    if name in BASELINES:
        warnings.warn(f"baseline {name!r} registered twice; the later one wins", stacklevel=2)
    BASELINES[name] = arch
    if paper is not None:
        PAPERS[name] = paper
    else:
        PAPERS.pop(name, None)
    return arch


def three_stage(
    blocks: tuple[int, int, int],
    widths: tuple[int, int, int],
    *,
    stem_width: int,
    block: Block = DEFAULT_BLOCK,
    **network: object,
) -> ArchConfig:
    """The CIFAR layout: 3x3 stem, stages at 32, 16 and 8 pixels, global average pool;
    ``network``: other `ArchConfig` fields."""
    stages = tuple(
        StageConfig(blocks=b, width=w, kernel=3, stride=stage_stride(i))
        for i, (b, w) in enumerate(zip(blocks, widths, strict=True))
    )
    return ArchConfig(stages=stages, stem_width=stem_width, block=block,
                      **network)  # type: ignore[arg-type]


def pyramid(depth: int, alpha: int, *, bottleneck: bool = False, **network: object) -> ArchConfig:
    """PyramidNet-``depth`` (6n+2 basic, 9n+2 bottleneck) widened by ``alpha`` from 16."""
    n = (depth - 2) // (9 if bottleneck else 6)
    expansion = 4 if bottleneck else 1
    widths = tuple(expansion * (16 + alpha * k // 3) for k in (1, 2, 3))
    block = PyramidBottleneck() if bottleneck else Pyramid()
    return three_stage((n, n, n), widths, stem_width=16, block=block,  # type: ignore[arg-type]
                       **network)


HE_2015 = "He et al. 2015, Deep Residual Learning, table 6"
HE_2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks, table 3"
WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks, table 4 (Cutout, AutoAugment: " \
      "DeVries & Taylor 2017; Cubuk et al. 2019)"
PYRAMID = "Han et al. 2017, Deep Pyramidal Residual Networks, table 4"
OPTION_A = ("the paper's shortcuts are zero-padded identities; projections add "
            "the difference here")

# The network whose published count (4,697,162) pins the counting down.
register("resnet-443", three_stage((4, 4, 3), (64, 128, 256), stem_width=64))
# He et al. (2015), section 4.2: 6n+2 layers, widths 16/32/64.
register("resnet-20", three_stage((3, 3, 3), (16, 32, 64), stem_width=16),
         Paper(270_000, "91.25%", HE_2015, OPTION_A, reference_params=272_474))
register("resnet-56", three_stage((9, 9, 9), (16, 32, 64), stem_width=16),
         Paper(850_000, "93.03%", HE_2015, reference_params=855_770))
register("resnet-110", three_stage((18, 18, 18), (16, 32, 64), stem_width=16),
         Paper(1_700_000, "93.57% (best of 5; mean 93.39%)", HE_2015,
               reference_params=1_730_714))
# ResNet-8 (n=1) at half width: small enough for the CPU smoke study's budget.
register("resnet-8-half", three_stage((1, 1, 1), (8, 16, 32), stem_width=8))
# ResNet-18's widths on three stages; 3+3+2 blocks keep its 18 weighted layers.
register("resnet-18-3stage", three_stage((3, 3, 2), (64, 128, 256), stem_width=64))
# He et al. (2016): 164 layers of bottleneck blocks, inner widths 16/32/64.
register(
    "resnet-164",
    three_stage((18, 18, 18), (64, 128, 256), stem_width=16, block=Bottleneck()),
    Paper(1_700_000, "94.07% (post-activation)", HE_2016, reference_params=1_704_154),
)
# Zagoruyko & Komodakis (2016) WRN-16-4 layout (post-activation here).
register("wrn-16-4", three_stage((2, 2, 2), (64, 128, 256), stem_width=16),
         Paper(2_700_000, "94.98% (pre-activation in the paper)", WRN))
# Pre-activation wide ResNets: depth 6n+4, widths (16, 32, 64) x k.
register("wrn-40-2", three_stage((6, 6, 6), (32, 64, 128), stem_width=16, block=PreAct()),
         Paper(2_200_000, "94.7% crop+flip; 95.9% Cutout; 96.3% AutoAugment (200 epochs)",
               WRN))
register("wrn-22-4", three_stage((3, 3, 3), (64, 128, 256), stem_width=16, block=PreAct()),
         Paper(None, "- (not in the paper's tables)", WRN,
               "the paper gives no count for WRN-22-4; ~4.3M is our own arithmetic"))
register("preact-resnet-164",
         three_stage((18, 18, 18), (64, 128, 256), stem_width=16, block=PreActBottleneck()),
         Paper(1_700_000, "94.54%", HE_2016, reference_params=1_703_258))
# The course design: pre-activation ResNet-164 with SE gates of a quarter of the width.
register("se-resnet-164",
         three_stage((18, 18, 18), (64, 128, 256), stem_width=16, block=PreActBottleneck(),
                     se_ratio=0.25),
         Paper(2_500_000, "- (a course design; SE: Hu et al. 2018)", "the SE-ResNet-164 design"))
# PyramidNet: additive widening from 16 by alpha over the 3n blocks, zero-padded shortcuts.
register("pyramidnet-110-a48", pyramid(110, 48),
         Paper(1_700_000, "95.42% (300 epochs)", PYRAMID,
               "the paper's 1.7M is 1.77M rounded down; the reference count is ours exactly",
               reference_params=1_772_706))
register("pyramidnet-110-a84", pyramid(110, 84),
         Paper(3_800_000, "95.74% (300 epochs)", PYRAMID,
               "the paper's 3.8M is under the 3.90M both implementations count",
               reference_params=3_904_446))
register("pyramidnet-164-a48", pyramid(164, 48, bottleneck=True),
         Paper(1_700_000, "95.8% (300 epochs)", PYRAMID))
register("pyramidnet-164-a84", pyramid(164, 84, bottleneck=True),
         Paper(3_800_000, "96.0% (300 epochs)", PYRAMID))
# A PyramidNet that resnet-budget's 1..9 blocks per stage can make, with ShakeDrop's
# linear rule to 0.5 (Yamada et al. 2018 use it on PyramidNet-272, over this budget).
register("pyramidnet-56-a48-shakedrop",
         pyramid(56, 48, branch_drop="shakedrop", branch_drop_rate=0.5),
         Paper(None, "- (ShakeDrop's paper reports only networks over 5M)",
               "Yamada et al. 2018, ShakeDrop Regularization",
               "a small variant of the paper's PyramidNet + ShakeDrop; no published count"))
# Shake-Shake-26 2x32d: 3 stages of 4 blocks, two 32-wide branches at the first; the
# shortcut where shapes change is average pooling and a 1x1 projection.
register("shake-shake-26-2x32d",
         three_stage((4, 4, 4), (32, 64, 128), stem_width=16, block=Shake(),
                     shortcut_pool=True),
         Paper(2_900_000, "96.45% (1800 epochs); 97.3-97.5% with AutoAugment",
               "Gastaldi 2017, Shake-Shake regularization, table 1; Cubuk et al. 2019"))
