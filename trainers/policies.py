"""Augmentation policies (TrivialAugment-Wide, RandAugment, AutoAugment's CIFAR-10 policy)
as batched uint8 ops on the training device. No torchvision, no PIL, no loop over images.

Every image of a batch gets its own op and magnitude. All 15 ops fall into three kinds,
and each kind is one batched pass whatever the mix of ops in the batch:

- **lookup** (invert, solarize, posterize, autocontrast, equalize): a 256-entry table per
  image and channel, gathered at the pixel values. Images with another op get the
  identity table.
- **blend** (brightness, color, contrast, sharpness): PIL's ``ImageEnhance``,
  ``degenerate + factor * (image - degenerate)`` truncated to uint8, with the degenerate
  image black, grey per pixel, the mean grey level, or the image smoothed.
- **affine** (shear x/y, translate x/y, rotate): each output pixel centre mapped to the
  input by a per-image 2 x 3 matrix (identity for other ops), nearest neighbour, outside
  filled with 0, as PIL's ``Image.transform(AFFINE, NEAREST)``.

The definitions are PIL's, with the magnitudes and signs torchvision's
``transforms.v2`` uses; tests/trainers/test_policies.py writes each reference formula out.
Known differences, all at most 1 grey level: the sharpness filter's rounding at .5, and
float32 blends against PIL's float32 ones near integer boundaries.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainers.config import POLICIES

OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
       "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
       "autocontrast", "equalize", "invert")
OP = {name: i for i, name in enumerate(OPS)}
AFFINE = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
BLEND = ("brightness", "color", "contrast", "sharpness")
SIGNED = AFFINE + BLEND  # a random sign per draw, as torchvision's policies do
# TrivialAugment-Wide and RandAugment both draw from these 14 (no invert).
WIDE_OPS = OPS[:-1]


def _ranges(size: int, wide: bool) -> dict[str, tuple[float, float]]:
    """Each op's magnitude range, bin 0 to the last: TrivialAugment-Wide's ``wide`` ones,
    else RandAugment's and AutoAugment's (torchvision's tables)."""
    if wide:
        return {"shear_x": (0, 0.99), "shear_y": (0, 0.99), "translate_x": (0, 32.0),
                "translate_y": (0, 32.0), "rotate": (0, 135.0), "brightness": (0, 0.99),
                "color": (0, 0.99), "contrast": (0, 0.99), "sharpness": (0, 0.99),
                "solarize": (255.0, 0.0)}
    shift = 150.0 / 331.0 * size
    return {"shear_x": (0, 0.3), "shear_y": (0, 0.3), "translate_x": (0, shift),
            "translate_y": (0, shift), "rotate": (0, 30.0), "brightness": (0, 0.9),
            "color": (0, 0.9), "contrast": (0, 0.9), "sharpness": (0, 0.9),
            "solarize": (255.0, 0.0)}


def magnitude_table(bins: int, wide: bool, size: int = 32) -> torch.Tensor:
    """float64 len(OPS) x bins: op i's magnitude at each bin, unsigned.

    Shears are shear factors, translations pixels (truncated to whole pixels when
    applied), rotations degrees, blends the factor's distance from 1, posterize bits,
    solarize the threshold; 0 for ops without a magnitude.
    """
    table = torch.zeros(len(OPS), bins, dtype=torch.float64)
    for name, (low, high) in _ranges(size, wide).items():
        table[OP[name]] = torch.linspace(low, high, bins, dtype=torch.float64)
    levels = 6 if wide else 4  # posterize: 8 bits down to 2 (wide) or 4
    table[OP["posterize"]] = 8 - (torch.arange(bins) / ((bins - 1) / levels)).round()
    return table


# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, as torchvision has it): 25
# sub-policies of two (op, probability, magnitude bin of 10) steps.
CIFAR10_POLICY = (
    (("invert", 0.1, 0), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 0), ("equalize", 0.9, 0)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)), (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 0), ("equalize", 0.5, 0)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 0), ("autocontrast", 0.4, 0)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 0)), (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 0), ("equalize", 0.6, 0)), (("color", 0.9, 9), ("equalize", 0.6, 0)),
    (("autocontrast", 0.8, 0), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 0)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 0), ("solarize", 0.8, 3)), (("equalize", 0.8, 0), ("invert", 0.1, 0)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 0)),
)


# -- the ops ------------------------------------------------------------------------------


def gray(x: torch.Tensor) -> torch.Tensor:
    """int32 N x 1 x H x W: PIL's RGB-to-"L" conversion of uint8 N x 3 x H x W
    ((19595 R + 38470 G + 7471 B + 2^15) >> 16, ITU-R 601 in 16-bit fixed point)."""
    r, g, b = x.to(torch.int32).unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16)[:, None]


def _lookup_tables(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """int64 N x C x 256: each image's and channel's table (identity unless its op is a
    lookup op)."""
    n, c = x.shape[:2]
    levels = torch.arange(256, device=x.device).expand(n, c, 256)
    op = op[:, None, None]
    value = magnitude[:, None, None]
    flat = x.reshape(n, c, -1).to(torch.int64)
    # solarize: levels at or above the threshold inverted
    table = torch.where((op == OP["solarize"]) & (levels >= value), 255 - levels, levels)
    # posterize: keep the top `bits` bits
    step = torch.pow(2.0, 8.0 - value.clamp(0, 8)).to(torch.int64)
    table = torch.where(op == OP["posterize"], levels // step * step, table)
    table = torch.where(op == OP["invert"], 255 - levels, table)
    # autocontrast: each channel's range stretched to 0..255 (PIL: int(v * scale + offset))
    low = flat.amin(2, keepdim=True).double()
    high = flat.amax(2, keepdim=True).double()
    # a true division: `255.0 / tensor` is reciprocal-then-multiply in torch, off by an ulp
    scale = torch.full_like(high, 255.0) / (high - low).clamp(min=1.0)
    stretched = (levels * scale - low * scale).floor().clamp(0, 255).to(torch.int64)
    table = torch.where((op == OP["autocontrast"]) & (high > low), stretched, table)
    # equalize: PIL's ImageOps.equalize, per channel (levels past 255 clipped)
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(2, flat, torch.ones_like(flat))
    last = torch.where(hist > 0, levels, -1).amax(2, keepdim=True)  # highest level present
    eq_step = (flat.shape[2] - hist.gather(2, last)) // 255  # Pillow >= 10 and torchvision
    below = hist.cumsum(2) - hist  # pixels strictly darker than each level
    equalized = ((eq_step // 2 + below) // eq_step.clamp(min=1)).clamp(max=255)
    return torch.where((op == OP["equalize"]) & (eq_step > 0), equalized, table)


def _smoothed(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3 x 3, centre 5, the rest 1, / 13), rounded; the border
    rows and columns keep their values."""
    c = x.shape[1]
    kernel = torch.ones(c, 1, 3, 3, dtype=torch.float32, device=x.device)
    kernel[:, :, 1, 1] = 5.0
    inner = F.conv2d(x.float(), kernel / 13.0, groups=c).round()
    out = x.float().clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _blend(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """float32: PIL's ImageEnhance for images whose op is a blend op, else ``x``."""
    xf = x.float()
    op4 = op[:, None, None, None]
    luma = gray(x).float()
    mean = (luma.mean((1, 2, 3), keepdim=True) + 0.5).floor()  # PIL: int(mean + 0.5)
    degenerate = torch.where(op4 == OP["color"], luma, torch.zeros_like(xf))
    degenerate = torch.where(op4 == OP["contrast"], mean, degenerate)
    degenerate = torch.where(op4 == OP["sharpness"], _smoothed(x), degenerate)
    factor = (1.0 + magnitude).float()[:, None, None, None]
    blended = (degenerate + factor * (xf - degenerate)).clamp(0, 255).floor()
    is_blend = (op4 >= OP["brightness"]) & (op4 <= OP["sharpness"])
    return torch.where(is_blend, blended, xf)


def affine_matrices(op: torch.Tensor, magnitude: torch.Tensor, size: int) -> torch.Tensor:
    """float64 N x 2 x 3: output pixel centre (x + 0.5, y + 0.5, 1) to input coordinates.

    Shears about the origin, as PIL's ``(1, m, 0, 0, 1, 0)``; translations by whole pixels
    (positive: right or down); rotations counter-clockwise about the centre with PIL's
    ``Image.rotate`` matrix (entries rounded to 15 decimals, so 90 degrees is exact).
    """
    n = op.shape[0]
    m = magnitude.to(torch.float64)
    matrix = torch.zeros(n, 2, 3, dtype=torch.float64, device=op.device)
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1.0
    matrix[:, 0, 1] = torch.where(op == OP["shear_x"], m, 0.0)
    matrix[:, 1, 0] = torch.where(op == OP["shear_y"], m, 0.0)
    matrix[:, 0, 2] = torch.where(op == OP["translate_x"], -m.trunc(), 0.0)
    matrix[:, 1, 2] = torch.where(op == OP["translate_y"], -m.trunc(), 0.0)
    turn = op == OP["rotate"]
    radians = torch.where(turn, m, 0.0) * (math.pi / 180.0)
    cos = (torch.cos(radians) * 1e15).round() / 1e15
    sin = (torch.sin(radians) * 1e15).round() / 1e15
    centre = size / 2.0
    rotation = torch.stack([torch.stack([cos, -sin, centre - centre * cos + centre * sin], 1),
                            torch.stack([sin, cos, centre - centre * sin - centre * cos], 1)], 1)
    return torch.where(turn[:, None, None], rotation, matrix)


def _warp(x: torch.Tensor, matrix: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``x`` (float N x C x H x W) resampled through per-image ``matrix``, nearest."""
    n, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device) + 0.5,
                            torch.arange(w, dtype=torch.float64, device=x.device) + 0.5,
                            indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs.flatten())])
    source = (matrix @ points).floor().to(torch.int64)  # N x 2 x HW
    sx, sy = source[:, 0], source[:, 1]
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    index = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1))[:, None].expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index)
    return torch.where(inside[:, None], out, fill).view(n, c, h, w)


def apply_ops(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image ``i`` of uint8 N x C x H x W ``x`` with op ``OPS[op[i]]`` at ``magnitude[i]``.

    Blend magnitudes are the factor minus 1 (brightness at -0.5 halves); posterize's is
    the bits kept, solarize's the threshold; see `magnitude_table` for the rest.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images must be uint8 N x C x H x W, got {x.dtype} {tuple(x.shape)}")
    n, c, h, w = x.shape
    tables = _lookup_tables(x, op, magnitude)
    looked = tables.gather(2, x.reshape(n, c, h * w).to(torch.int64)).view(n, c, h, w)
    blended = _blend(looked.to(torch.uint8), op, magnitude)
    warped = _warp(blended, affine_matrices(op, magnitude, h))
    return warped.to(torch.uint8)


# -- the policies -------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _constants(device: torch.device, size: int) -> dict[str, torch.Tensor]:
    """The policies' tables, made once per device: a copy from the host per batch would
    wait for the device's queue, a sync per step."""
    signed = torch.zeros(len(OPS), dtype=torch.bool)
    signed[[OP[name] for name in SIGNED]] = True
    steps = torch.tensor([[(OP[name], p, b) for name, p, b in sub] for sub in CIFAR10_POLICY],
                         dtype=torch.float64)  # 25 sub-policies x 2 steps x (op, p, bin)
    tables = {"signed": signed, "wide_ops": torch.tensor([OP[name] for name in WIDE_OPS]),
              "trivialaugment": magnitude_table(31, wide=True, size=size),
              "randaugment": magnitude_table(31, wide=False, size=size),
              "autoaugment": magnitude_table(10, wide=False, size=size), "steps": steps}
    return {name: table.to(device) for name, table in tables.items()}


class Draw(NamedTuple):
    """One round's ops and signed magnitudes, an entry per image."""

    op: torch.Tensor  # int64 N
    magnitude: torch.Tensor  # float64 N


def _signed(op: torch.Tensor, magnitude: torch.Tensor, signed: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(op.shape[0], generator=gen, device=op.device) < 0.5
    return torch.where(signed[op] & flip, -magnitude, magnitude)


def _wide_op(n: int, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return ids[torch.randint(0, len(ids), (n,), generator=gen, device=ids.device)]


def trivial_augment_draw(n: int, gen: torch.Generator, device: torch.device,
                         size: int = 32) -> Draw:
    """TrivialAugment-Wide (Müller & Hutter 2021): one op of 14 per image, a magnitude
    bin uniform over 31."""
    const = _constants(device, size)
    op = _wide_op(n, const["wide_ops"], gen)
    bins = torch.randint(0, 31, (n,), generator=gen, device=device)
    return Draw(op, _signed(op, const["trivialaugment"][op, bins], const["signed"], gen))


def rand_augment_draw(n: int, magnitude: int, gen: torch.Generator, device: torch.device,
                      size: int = 32) -> Draw:
    """One round of RandAugment (Cubuk et al. 2020): an op of 14 per image at bin
    ``magnitude`` of 31."""
    const = _constants(device, size)
    op = _wide_op(n, const["wide_ops"], gen)
    return Draw(op, _signed(op, const["randaugment"][op, magnitude], const["signed"], gen))


def auto_augment_draws(n: int, gen: torch.Generator, device: torch.device,
                       size: int = 32) -> tuple[Draw, Draw]:
    """AutoAugment's CIFAR-10 policy: a sub-policy per image, its two steps each applied
    with the step's probability (else identity), magnitudes from 10 bins."""
    const = _constants(device, size)
    table, steps = const["autoaugment"], const["steps"]
    chosen = steps[torch.randint(0, len(CIFAR10_POLICY), (n,), generator=gen, device=device)]
    draws = []
    for step in range(2):
        op = chosen[:, step, 0].to(torch.int64)
        applied = torch.rand(n, generator=gen, device=device) < chosen[:, step, 1]
        op = torch.where(applied, op, OP["identity"])
        magnitude = table[op, chosen[:, step, 2].to(torch.int64)]
        draws.append(Draw(op, _signed(op, magnitude, const["signed"], gen)))
    return draws[0], draws[1]


def apply_policy(images: torch.Tensor, policy: str, gen: torch.Generator, *, ops: int = 2,
                 magnitude: int = 9) -> torch.Tensor:
    """uint8 N x H x W x C images through ``policy`` (one of `POLICIES`), same layout out.

    Args:
        ops, magnitude: RandAugment's N (rounds) and M (bin of 0..30).
    """
    if policy == "none":
        return images
    x = images.permute(0, 3, 1, 2)
    n, device, size = x.shape[0], x.device, x.shape[-1]
    if policy == "trivialaugment":
        draws: tuple[Draw, ...] = (trivial_augment_draw(n, gen, device, size),)
    elif policy == "randaugment":
        draws = tuple(rand_augment_draw(n, magnitude, gen, device, size) for _ in range(ops))
    elif policy == "autoaugment":
        draws = auto_augment_draws(n, gen, device, size)
    else:
        raise ValueError(f"unknown policy {policy!r}: one of {POLICIES}")
    for draw in draws:
        x = apply_ops(x, draw.op, draw.magnitude)
    return x.permute(0, 2, 3, 1)
