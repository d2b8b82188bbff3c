"""Colour jitter and small rotations, batched on the device with per-image draws."""

from __future__ import annotations

import random

import pytest
import torch

from trainers.augment import TrainLoader, color_jitter, random_rotation, rotate
from trainers.config import TrainConfig


def test_rotating_by_90_degrees_is_rot90_counter_clockwise() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    turned = rotate(x, torch.tensor([90.0, -90.0]))
    assert torch.allclose(turned[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-4)
    assert torch.allclose(turned[1], torch.rot90(x[1], -1, (1, 2)), atol=1e-4)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-5)


def test_random_rotation_stays_within_its_range_and_is_per_image() -> None:
    x = torch.zeros(64, 1, 33, 33)
    x[:, :, 16, 16:] = 1.0  # a ray from the centre to the right edge
    out = random_rotation(x, 20.0, torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.arange(33.0) - 16, torch.arange(33.0) - 16, indexing="ij")
    weight = out[:, 0].clamp(min=0)
    angle = torch.rad2deg(torch.atan2(-(weight * ys).sum((1, 2)), (weight * xs).sum((1, 2))))
    assert angle.abs().max() <= 21.0 and angle.std() > 5.0  # spread over +-20 degrees
    assert torch.equal(random_rotation(x, 0.0, torch.Generator()), x)


def test_jitter_keeps_grey_grey_scales_brightness_within_range_and_is_seeded() -> None:
    gray = torch.full((200, 4, 4, 3), 0.5)
    out = color_jitter(gray, 0.4, torch.Generator().manual_seed(1))
    assert torch.allclose(out[..., 0], out[..., 1]) and torch.allclose(out[..., 1], out[..., 2])
    factors = out[:, 0, 0, 0] / 0.5  # a flat image: only brightness acts
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6 and factors.std() > 0.15
    colour = torch.rand(50, 8, 8, 3)
    first = color_jitter(colour, 0.4, torch.Generator().manual_seed(2))
    assert torch.equal(first, color_jitter(colour, 0.4, torch.Generator().manual_seed(2)))
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert not torch.allclose(first, colour)


def test_the_loader_applies_them_only_when_asked() -> None:
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    labels = torch.arange(64) % 10

    def batch(**kw: float) -> torch.Tensor:
        cfg = TrainConfig(batch_size=64, crop=False, flip=False, **kw)  # type: ignore[arg-type]
        loader = TrainLoader(images, labels, cfg, torch.Generator().manual_seed(3),
                             random.Random(3))
        return loader.augment(images, labels).images

    plain = batch()
    assert not torch.allclose(batch(jitter=0.3), plain)
    assert not torch.allclose(batch(rotate=15.0), plain)
    assert torch.equal(batch(jitter=0.3), batch(jitter=0.3))
    for field, value in (("jitter", 1.0), ("rotate", 200.0)):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})  # type: ignore[arg-type]
