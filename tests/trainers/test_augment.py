"""Device-side augmentation: shapes, dtypes, crops inside the padded image, mixing."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from trainers.augment import (
    MEAN,
    STD,
    TrainLoader,
    cutout,
    mix,
    normalize,
    random_crop,
    random_flip,
)
from trainers.config import TrainConfig


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def distinct_images(n: int) -> torch.Tensor:
    """float N x 3 x 32 x 32 whose every pixel value is unique."""
    return torch.arange(n * 3 * 32 * 32, dtype=torch.float32).view(n, 3, 32, 32)


def test_normalize_turns_nhwc_uint8_into_normalised_nchw_float() -> None:
    images = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    images[..., 0] = 255
    x = normalize(images)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.tensor((1 - MEAN[0]) / STD[0]))
    assert torch.allclose(x[:, 2], torch.tensor(-MEAN[2] / STD[2]))


def test_crops_keep_shape_and_lie_inside_the_padded_image() -> None:
    x = distinct_images(16)
    out = random_crop(x, 4, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1, f"crop {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 4  # the offsets vary


def test_zero_padding_crop_is_the_identity() -> None:
    x = distinct_images(2)
    assert torch.equal(random_crop(x, 0, gen()), x)


def test_flip_mirrors_some_images_and_keeps_the_rest() -> None:
    x = distinct_images(32)
    out = random_flip(x, gen())
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(32)]
    kept = [torch.equal(out[i], x[i]) for i in range(32)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 4 < sum(flipped) < 28


def test_cutout_zeroes_one_clipped_square_per_image() -> None:
    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, 8, gen())
    assert out.shape == x.shape
    for i in range(64):
        zero = out[i, 0] == 0
        assert torch.equal(zero, (out[i] == 0).all(0))  # all channels alike
        rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        assert zero.sum() == len(rows) * len(cols)  # a rectangle
        assert (out[i][~zero.expand(3, -1, -1)] == 1).all()


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_gives_probability_targets(mixup: float, cutmix: float) -> None:
    cfg = TrainConfig(mixup=mixup, cutmix=cutmix)
    x = distinct_images(8)
    labels = torch.arange(8) % 10
    rng = random.Random(0)
    for _ in range(5):
        mixed, targets = mix(x, labels, cfg, gen(), rng)
        assert mixed.shape == x.shape
        assert targets.shape == (8, 10)
        assert torch.allclose(targets.sum(1), torch.ones(8))
        assert (targets >= 0).all()


def test_loader_yields_whole_batches_of_distinct_images_each_epoch() -> None:
    n = 100
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 32, 32, 3).clone()
    labels = torch.arange(n) % 10
    cfg = TrainConfig(batch_size=32, crop=False, flip=False)
    loader = TrainLoader(images, labels, cfg, gen(), random.Random(0))
    assert len(loader) == 3
    seen: list[int] = []
    for batch in loader:
        assert batch.images.shape == (32, 3, 32, 32) and batch.images.dtype == torch.float32
        assert batch.labels.dtype == torch.int64
        # Undo the normalisation to find which images were drawn.
        ids = (batch.images[:, 0, 0, 0] * STD[0] + MEAN[0]) * 255
        seen += ids.round().long().tolist()
        assert torch.equal(torch.tensor(seen[-32:]) % 10, batch.labels)
    assert len(set(seen)) == 96


def test_loader_is_reproducible_from_its_generators() -> None:
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    cfg = TrainConfig(batch_size=16, cutout=8, mixup=0.2)

    def epoch() -> list[torch.Tensor]:
        loader = TrainLoader(images, labels, cfg, gen(3), random.Random(3))
        return [b.images for b in loader]

    assert all(torch.equal(a, b) for a, b in zip(epoch(), epoch(), strict=True))


def test_loader_refuses_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TrainLoader(torch.zeros(4, 32, 32, 3), torch.zeros(4, dtype=torch.long),
                    TrainConfig(), gen(), random.Random(0))


def one_hot_images(n: int) -> torch.Tensor:
    """float N x N x 32 x 32: image i is 1 in channel i and 0 elsewhere, at every pixel.

    After mixing, the mean of channel k over image i's pixels is the share of image i
    that came from image k, so the images alone reveal how they were mixed.
    """
    return torch.eye(n).view(n, n, 1, 1).expand(n, n, 32, 32).clone()


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_targets_mix_the_labels_in_the_proportions_the_images_were_mixed(
        mixup: float, cutmix: float) -> None:
    n = 10  # one class per image, so targets and image channels line up
    x, labels = one_hot_images(n), torch.arange(n)
    cfg = TrainConfig(mixup=mixup, cutmix=cutmix)
    rng = random.Random(0)
    kept = []
    for seed in range(40):
        mixed, targets = mix(x, labels, cfg, gen(seed), rng)
        shares = mixed.mean(dim=(2, 3))  # N x N: how much of image i came from image k
        torch.testing.assert_close(targets, shares, atol=1e-6, rtol=0)
        moved = targets.diagonal() < 1  # images whose partner is another image
        # One lambda per batch: every mixed image keeps the same share of itself.
        own = targets.diagonal()[moved]
        if len(own):
            torch.testing.assert_close(own, own[:1].expand_as(own))
            kept.append(float(own[0]))
    assert len(set(kept)) > 20  # lambda is drawn anew per batch, not fixed


def test_cutmix_pastes_one_box_and_its_lambda_is_the_area_kept_after_clipping() -> None:
    n = 10
    x, labels = one_hot_images(n), torch.arange(n)
    cfg = TrainConfig(cutmix=1.0)
    rng = random.Random(1)
    clipped = 0
    for seed in range(60):
        mixed, targets = mix(x, labels, cfg, gen(seed), rng)
        assert ((mixed == 0) | (mixed == 1)).all()  # pixels are pasted, never blended
        source = mixed.argmax(1)  # N x 32 x 32: which image each pixel came from
        pasted = source != torch.arange(n)[:, None, None]
        boxes = {tuple(pasted[i].nonzero().min(0).values.tolist()
                       + pasted[i].nonzero().max(0).values.tolist())
                 for i in range(n) if pasted[i].any()}
        assert len(boxes) <= 1, "every image gets the same box"
        if not boxes:
            continue
        y0, x0, y1, x1 = boxes.pop()
        area = (y1 - y0 + 1) * (x1 - x0 + 1)
        for i in range(n):
            if pasted[i].any():
                assert int(pasted[i].sum()) == area  # the box is filled: a rectangle
                assert targets[i, i].item() == pytest.approx(1 - area / 32**2, abs=1e-6)
        clipped += y0 == 0 or x0 == 0 or y1 == 31 or x1 == 31
    assert clipped >= 5  # boxes cut by the border were among them
