"""Augmentation policies: each batched op against its PIL definition (written out here as
reference formulas, and against Pillow itself), the policies' draws, RICAP.

Tolerance: every op matches the reference exactly on real CIFAR images, except rotations
whose sample points fall exactly on a pixel edge (multiples of 45 degrees that are not
multiples of 90): there PIL's running sums and our products may pick the other
neighbour, on at most 3% of the pixels.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from models.validate import ConfigError
from trainers.augment import TrainLoader, ricap
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.policies import (
    CIFAR10_POLICY,
    OP,
    OPS,
    SIGNED,
    WIDE_OPS,
    apply_ops,
    apply_policy,
    auto_augment_draws,
    magnitude_table,
    rand_augment_draw,
    trivial_augment_draw,
)

# -- reference formulas, one image (H x W x 3 uint8) at a time, in plain numpy --------------


def _luma(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(np.int64) for i in range(3))
    return (19595 * r + 38470 * g + 7471 * b + 32768) >> 16


def _blend(degenerate: np.ndarray, img: np.ndarray, factor: float) -> np.ndarray:
    f, d = np.float32(factor), degenerate.astype(np.float32)  # PIL blends in float32
    out = d + f * (img.astype(np.float32) - d)
    return np.floor(np.clip(out, 0, 255)).astype(np.uint8)


def _affine(img: np.ndarray, a: tuple[float, ...]) -> np.ndarray:
    """PIL's AFFINE/NEAREST: output pixel centre to input, floor, outside -> 0."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = math.floor(a[0] * (x + 0.5) + a[1] * (y + 0.5) + a[2])
            sy = math.floor(a[3] * (x + 0.5) + a[4] * (y + 0.5) + a[5])
            if 0 <= sx < w and 0 <= sy < h:
                out[y, x] = img[sy, sx]
    return out


def _rotation(degrees: float, size: int) -> tuple[float, ...]:
    t = math.radians(degrees)
    c, s, m = round(math.cos(t), 15), round(math.sin(t), 15), size / 2
    return (c, -s, m - m * c + m * s, s, c, m - m * s - m * c)


def _table(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return np.stack([lut[i][img[..., i]] for i in range(3)], -1).astype(np.uint8)


def _equalize_lut(channel: np.ndarray) -> np.ndarray:
    hist = np.bincount(channel.ravel(), minlength=256)
    counts = hist[hist > 0]
    step = (counts.sum() - counts[-1]) // 255
    if len(counts) <= 1 or step == 0:
        return np.arange(256)
    below = np.concatenate([[0], np.cumsum(hist)[:-1]])
    return np.minimum((step // 2 + below) // step, 255)


def _autocontrast_lut(channel: np.ndarray) -> np.ndarray:
    lo, hi = int(channel.min()), int(channel.max())
    if hi <= lo:
        return np.arange(256)
    scale = 255.0 / (hi - lo)
    return np.array([min(max(int(i * scale - lo * scale), 0), 255) for i in range(256)])


def _smooth(img: np.ndarray) -> np.ndarray:
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
    f = img.astype(np.float32)
    out = f.copy()
    h, w = img.shape[:2]
    acc = sum(kernel[i, j] * f[i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3))
    out[1:-1, 1:-1] = np.round(acc)
    return out


def reference(img: np.ndarray, op: str, m: float) -> np.ndarray:
    levels = np.arange(256)
    size = img.shape[0]
    if op == "identity":
        return img
    if op in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        return _affine(img, {"shear_x": (1, m, 0, 0, 1, 0), "shear_y": (1, 0, 0, m, 1, 0),
                             "translate_x": (1, 0, -int(m), 0, 1, 0),
                             "translate_y": (1, 0, 0, 0, 1, -int(m)),
                             "rotate": _rotation(m, size)}[op])
    if op == "brightness":
        return _blend(np.zeros_like(img), img, 1 + m)
    if op == "color":
        return _blend(np.repeat(_luma(img)[..., None], 3, -1), img, 1 + m)
    if op == "contrast":
        return _blend(np.full_like(img, int(_luma(img).mean() + 0.5)), img, 1 + m)
    if op == "sharpness":
        return _blend(_smooth(img), img, 1 + m)
    if op == "posterize":
        keep = 2 ** (8 - int(m))
        return _table(img, np.stack([levels // keep * keep] * 3))
    if op == "solarize":
        return _table(img, np.stack([np.where(levels >= m, 255 - levels, levels)] * 3))
    if op == "invert":
        return 255 - img
    if op == "autocontrast":
        return _table(img, np.stack([_autocontrast_lut(img[..., i]) for i in range(3)]))
    assert op == "equalize"
    return _table(img, np.stack([_equalize_lut(img[..., i]) for i in range(3)]))


def pillow(img: np.ndarray, op: str, m: float) -> np.ndarray:
    """The same op by Pillow, as torchvision's PIL path calls it."""
    im = Image.fromarray(img)
    affine = {"shear_x": (1, m, 0, 0, 1, 0), "shear_y": (1, 0, 0, m, 1, 0),
              "translate_x": (1, 0, -int(m), 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, -int(m))}
    enhance = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
               "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}
    if op in affine:
        im = im.transform(im.size, Image.Transform.AFFINE, affine[op],
                          Image.Resampling.NEAREST, fillcolor=0)
    elif op == "rotate":
        im = im.rotate(m, Image.Resampling.NEAREST, fillcolor=0)
    elif op in enhance:
        im = enhance[op](im).enhance(1 + m)
    elif op == "posterize":
        im = ImageOps.posterize(im, int(m))
    elif op == "solarize":
        im = ImageOps.solarize(im, m)
    elif op != "identity":
        im = {"invert": ImageOps.invert, "autocontrast": ImageOps.autocontrast,
              "equalize": ImageOps.equalize}[op](im)
    return np.asarray(im)


CASES = [("identity", 0.0), ("shear_x", 0.3), ("shear_x", -0.57), ("shear_y", 0.99),
         ("shear_y", -0.21), ("translate_x", 5.3), ("translate_x", -14.5),
         ("translate_y", 7.9), ("translate_y", -3.0), ("rotate", 17.3), ("rotate", -90.0),
         ("rotate", 135.0), ("rotate", -45.0), ("brightness", -0.5), ("brightness", 0.7),
         ("color", -0.9), ("color", 0.66), ("contrast", -0.4), ("contrast", 0.9),
         ("sharpness", -0.8), ("sharpness", 0.99), ("posterize", 1), ("posterize", 4),
         ("solarize", 0.0), ("solarize", 128.0), ("solarize", 246.5), ("autocontrast", 0.0),
         ("equalize", 0.0), ("invert", 0.0)]


@pytest.fixture(scope="module")
def images(cifar_jpeg: CifarData) -> np.ndarray:
    """Six real test images and two hand-made ones: flat, and a low-contrast gradient."""
    ys, xs = np.mgrid[0:32, 0:32]
    gradient = np.stack([60 + xs, 70 + ys, 80 + (xs + ys) // 2], -1).astype(np.uint8)
    flat = np.full((32, 32, 3), 77, np.uint8)
    return np.concatenate([cifar_jpeg.test_images[:6], gradient[None], flat[None]])


def batched(images: np.ndarray, op: str, m: float) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    n = len(images)
    out = apply_ops(x, torch.full((n,), OP[op]), torch.full((n,), m, dtype=torch.float64))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("op", "m"), CASES, ids=[f"{op}{m:g}" for op, m in CASES])
def test_each_op_matches_its_reference_formula_and_pillow(images: np.ndarray, op: str,
                                                          m: float) -> None:
    ours = batched(images, op, m)
    edge_ties = op == "rotate" and m % 90 != 0 and m % 45 == 0
    for want in (np.stack([reference(img, op, m) for img in images]),
                 np.stack([pillow(img, op, m) for img in images])):
        differ = (ours != want).any(-1).mean()
        assert differ <= (0.03 if edge_ties else 0.0), (op, m, differ)


def test_ops_at_their_zero_magnitude_are_the_identity(images: np.ndarray) -> None:
    table = magnitude_table(31, wide=True)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for name in OPS:
        if name in ("solarize", "autocontrast", "equalize", "invert"):
            continue  # no magnitude that leaves an image alone (solarize: threshold 256)
        out = apply_ops(x, torch.full((len(x),), OP[name]), table[OP[name], :1].expand(len(x)))
        assert torch.equal(out, x), name
    high = torch.full((len(x),), 256.0, dtype=torch.float64)
    assert torch.equal(apply_ops(x, torch.full((len(x),), OP["solarize"]), high), x)
    assert table[OP["posterize"], 0] == 8 and table[OP["solarize"], 0] == 255


def test_known_outputs_on_hand_made_images() -> None:
    gradient = torch.arange(3 * 32 * 32).remainder(256).to(torch.uint8).view(1, 3, 32, 32)

    def one(op: str, m: float) -> torch.Tensor:
        return apply_ops(gradient, torch.tensor([OP[op]]), torch.tensor([m], dtype=torch.float64))

    assert torch.equal(one("rotate", 90.0), torch.rot90(gradient, 1, (2, 3)))
    assert torch.equal(one("rotate", -90.0), torch.rot90(gradient, -1, (2, 3)))
    assert torch.equal(one("rotate", 180.0), gradient.flip(2, 3))
    assert torch.equal(one("solarize", 0.0), 255 - gradient)  # threshold 0 inverts all
    assert torch.equal(one("posterize", 1.0), gradient & 128)  # 1 bit: 0 or 128
    shifted = one("translate_x", 5.0)  # 5 pixels right, 5 columns of fill on the left
    assert torch.equal(shifted[..., 5:], gradient[..., :-5]) and not shifted[..., :5].any()
    up = one("translate_y", -3.0)
    assert torch.equal(up[:, :, :-3], gradient[:, :, 3:]) and not up[:, :, -3:].any()
    assert torch.equal(one("invert", 0.0), 255 - gradient)


def test_every_image_draws_its_own_op_and_magnitude() -> None:
    x = torch.full((256, 32, 32, 3), 100, dtype=torch.uint8)
    x[:, :16] = 30  # a two-tone image, so that every op can change it
    draw = trivial_augment_draw(256, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(draw.op.tolist()) == {OP[name] for name in WIDE_OPS}
    assert len(set(draw.magnitude.tolist())) > 40
    out = apply_policy(x, "trivialaugment", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    distinct = {bytes(image.numpy().tobytes()) for image in out}
    assert len(distinct) > 50  # the same input, different per-image ops


def test_policies_are_seeded(images: np.ndarray) -> None:
    x = torch.from_numpy(images).repeat(8, 1, 1, 1)
    for policy in ("trivialaugment", "randaugment", "autoaugment"):
        a = apply_policy(x, policy, torch.Generator().manual_seed(3))
        b = apply_policy(x, policy, torch.Generator().manual_seed(3))
        c = apply_policy(x, policy, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c), policy
    assert apply_policy(x, "none", torch.Generator()) is x


def test_randaugment_uses_its_fixed_magnitude_with_a_random_sign() -> None:
    table = magnitude_table(31, wide=False)
    draw = rand_augment_draw(2000, 9, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(draw.magnitude.abs(), table[draw.op, 9].abs())
    signed = torch.tensor([OPS[i] in SIGNED for i in draw.op.tolist()])
    negative = (draw.magnitude < 0)[signed].float().mean()
    assert 0.4 < negative < 0.6 and not (draw.magnitude < 0)[~signed].any()
    assert table[OP["translate_x"], 30] == pytest.approx(150 / 331 * 32)
    assert table[OP["posterize"], 30] == 4 and table[OP["rotate"], 30] == 30


def test_autoaugment_draws_only_the_cifar10_sub_policies() -> None:
    n = 4000
    draws = auto_augment_draws(n, torch.Generator().manual_seed(0), torch.device("cpu"))
    identity = OP["identity"]
    pairs = {(OP[a[0]], OP[b[0]]) for a, b in CIFAR10_POLICY}
    table = magnitude_table(10, wide=False)
    for step, draw in enumerate(draws):
        allowed: dict[int, set[float]] = {identity: {0.0}}
        for sub in CIFAR10_POLICY:
            name, _, level = sub[step]
            allowed.setdefault(OP[name], set()).add(round(float(table[OP[name], level]), 9))
        for op, m in zip(draw.op.tolist(), draw.magnitude.tolist(), strict=True):
            assert round(abs(m), 9) in allowed[op], (step, OPS[op], m)
        # Each step happens with its own probability (1/25 of images per sub-policy).
        expected = 1 - sum(sub[step][1] for sub in CIFAR10_POLICY) / len(CIFAR10_POLICY)
        assert abs((draw.op == identity).float().mean().item() - expected) < 0.03, step
    for op1, op2 in zip(draws[0].op.tolist(), draws[1].op.tolist(), strict=True):
        assert (op1, op2) in pairs or identity in (op1, op2)


def test_ricap_tiles_four_shuffles_with_area_weighted_targets() -> None:
    n = 16
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).clone()
    labels = torch.arange(n) % 10
    out, targets = ricap(x, labels, 0.3, torch.Generator().manual_seed(0), random.Random(1))
    assert torch.allclose(targets.sum(1), torch.ones(n))
    for i in range(n):  # each pixel's value names the image it came from
        sources, counts = out[i, 0].long().unique(return_counts=True)
        expected = torch.zeros(10)
        for source, count in zip(sources.tolist(), counts.tolist(), strict=True):
            expected[labels[source]] += count / (32 * 32)
        assert torch.allclose(targets[i], expected), i
        assert len(sources) <= 4


def test_the_loader_applies_the_policy_and_ricap_and_the_config_checks_them() -> None:
    imgs = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))

    def batch(**fields: object) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = TrainConfig(batch_size=64, crop=False, flip=False, **fields)  # type: ignore[arg-type]
        loader = TrainLoader(imgs, labels, cfg, torch.Generator().manual_seed(0), random.Random(0))
        got = next(iter(loader))
        return got.images, got.targets

    plain, hard = batch()
    augmented, _ = batch(policy="autoaugment")
    assert not torch.equal(plain, augmented) and hard.ndim == 1
    _, soft = batch(ricap=0.3)
    assert soft.shape == (64, 10) and torch.allclose(soft.sum(1), torch.ones(64))
    for field, value in (("policy", "autoaugment-imagenet"), ("policy_ops", 0),
                         ("policy_magnitude", 31), ("ricap", -1.0)):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(**{field: value})  # type: ignore[arg-type]
