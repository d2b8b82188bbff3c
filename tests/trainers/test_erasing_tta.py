"""Random erasing on the device, and test-time augmentation with translations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from trainers.augment import random_erasing, tta_logits, tta_views
from trainers.config import TrainConfig
from trainers.inference import predict_logits


def boxes(x: torch.Tensor, out: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """The erased rectangle of each image (top, left, height, width), or None."""
    found: list[tuple[int, int, int, int] | None] = []
    for zeroed in (out == 0).all(1) & (x != 0).all(1):
        ys, xs = torch.nonzero(zeroed, as_tuple=True)
        if len(ys) == 0:
            found.append(None)
            continue
        top, left = int(ys.min()), int(xs.min())
        h, w = int(ys.max()) - top + 1, int(xs.max()) - left + 1
        assert len(ys) == h * w, "the erased pixels are one rectangle"
        found.append((top, left, h, w))
    return found


def test_erasing_with_p_1_erases_one_box_per_image_within_the_ranges() -> None:
    cfg = TrainConfig(erasing=1.0, erasing_min_area=0.05, erasing_max_area=0.3,
                      erasing_max_aspect=3.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 32, 32) + 0.5  # no zero anywhere before erasing
    out = random_erasing(x, cfg, gen)
    found = boxes(x, out)
    assert all(b is not None for b in found)
    shares = [b[2] * b[3] / 1024 for b in found if b is not None]
    aspects = [b[2] / b[3] for b in found if b is not None]
    assert min(shares) >= 0.04 and max(shares) <= 0.32  # rounding to whole pixels
    assert min(aspects) >= 1 / 3.3 and max(aspects) <= 3.3
    assert len({b for b in found}) > 150  # per-image boxes
    assert max(aspects) > 1.5 and min(aspects) < 1 / 1.5  # both orientations drawn


def test_erasing_probability_and_seed() -> None:
    x = torch.rand(400, 3, 32, 32) + 0.5
    off = random_erasing(x, TrainConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(off, x)
    cfg = TrainConfig(erasing=0.25)
    first = random_erasing(x, cfg, torch.Generator().manual_seed(1))
    again = random_erasing(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    erased = sum(b is not None for b in boxes(x, first)) / len(x)
    assert erased == pytest.approx(0.25, abs=0.06)


def test_bad_erasing_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"erasing: must be in 0\.\.1"):
        TrainConfig(erasing=1.5)
    with pytest.raises(ValueError, match="erasing_max_area"):
        TrainConfig(erasing_min_area=0.5, erasing_max_area=0.2)


class LeftMinusRight(nn.Module):
    """Logit 0: mean of the left half minus the right half of channel 0; logit 1: the
    mean of the top row. Hand-checkable under flips and shifts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        a = x[:, 0, :, : w // 2].mean((1, 2)) - x[:, 0, :, w // 2:].mean((1, 2))
        b = x[:, 0, 0, :].mean(1)
        return torch.stack([a, b], 1)


def test_tta_averages_the_hand_computed_views() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) ** 1.5
    model = LeftMinusRight()
    plain = tta_logits(model, x, flip=False)
    assert torch.equal(plain, model(x))
    flipped = tta_logits(model, x, flip=True)
    assert torch.equal(flipped, (model(x) + model(x.flip(3))) / 2)  # as before this release
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    down_right, up_left = padded[..., :8, :8], padded[..., 4:, 4:]
    assert torch.equal(down_right[..., 2:, 2:], x[..., :6, :6])  # shifted by 2 pixels
    views = [x, down_right, up_left]
    expected = sum(model(v) + model(v.flip(3)) for v in views) / 6
    assert torch.allclose(tta_logits(model, x, flip=True, translate=2), expected)
    assert len(tta_views(x, False, 2)) == 3 and len(tta_views(x, True, 2)) == 6
    assert not torch.allclose(expected, flipped)  # the translations count


def test_evaluation_and_prediction_use_the_same_views() -> None:
    from trainers.augment import normalize
    from trainers.training import evaluate

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))
    images = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8)
    logits = predict_logits(model, images.numpy(), tta_flip=True, tta_translate=2)
    direct = tta_logits(model.eval(), normalize(images), flip=True, translate=2)
    assert np.allclose(logits, direct.detach().numpy(), atol=1e-5)
    labels = torch.from_numpy(logits.argmax(1))
    _, acc = evaluate(model, images, labels, tta_flip=True, tta_translate=2)
    assert acc == 1.0  # evaluate predicts what predict_logits predicts


def test_tta_translate_is_checked_and_defaults_to_off() -> None:
    assert TrainConfig().tta_translate == 0
    with pytest.raises(ValueError, match=r"tta_translate: must be in 0\.\.8"):
        dataclasses.replace(TrainConfig(), tta_translate=9)
