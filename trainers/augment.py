"""Batches drawn from a split held on the training device, augmented there.

The whole split lives on the device as uint8 (N x 32 x 32 x 3, the layout CIFAR
stores, which is channels-last). Each batch is gathered, optionally put through an
augmentation policy on its uint8 pixels (`trainers.policies`), normalised, randomly
cropped from a reflection-padded copy, flipped, cut out and optionally mixed,
all as batched tensor ops on that device: no CPU worker touches a pixel, and
nothing waits on the host. No torchvision.

Randomness comes from two sources that checkpoints save: a `torch.Generator` on
the device for per-image draws, and a `random.Random` for per-batch scalars
(mixup's lambda, the CutMix box), which keeps them off the device.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainers.config import TrainConfig
from trainers.policies import apply_policy

# Per-channel statistics of the CIFAR-10 training images, in [0, 1].
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
AHEAD_CHUNK = 8192  # images augmented per pass with augment_ahead (bounds the float copies)


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x H x W x C (or N x C x H x W) to normalised float N x C x H x W.

    An N x H x W x C input becomes a channels-last N x C x H x W view without a copy.
    """
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    mean = constant(MEAN, images.device, dtype).view(1, 3, 1, 1)
    std = constant(STD, images.device, dtype).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - mean) / std


_CONSTANTS: dict[tuple[tuple[float, ...], torch.device, torch.dtype], torch.Tensor] = {}


def constant(values: tuple[float, ...], device: torch.device,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` as a tensor on ``device``, made once per device and dtype.

    ``torch.tensor(..., device="cuda")`` is a blocking host-to-device copy: made on every
    batch it would stall the step on the host (and rule out CUDA graphs). Callers must
    not write to the tensor.
    """
    key = (values, device, dtype)
    cached = _CONSTANTS.get(key)
    if cached is None:
        cached = _CONSTANTS[key] = torch.tensor(values, device=device, dtype=dtype)
    return cached


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """A random H x W window of each image reflection-padded by ``padding``."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as PIL's "L" conversion


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation of each image in an N x H x W x C batch in
    [0, 1], each scaled by its own factor from U[1 - strength, 1 + strength].

    Brightness multiplies; contrast blends with the image's mean grey level;
    saturation with each pixel's grey level (PIL's ImageEnhance definitions, in
    float, clamped to [0, 1] after each).
    """
    n = x.shape[0]
    factors = 1.0 + strength * (2.0 * torch.rand(3, n, 1, 1, 1, generator=gen,
                                                 device=x.device) - 1.0)
    weights = constant(GRAY, x.device, x.dtype)
    x = (x * factors[0]).clamp(0.0, 1.0)
    mean = (x * weights).sum(-1, keepdim=True).mean((1, 2, 3), keepdim=True)
    x = (mean + factors[1] * (x - mean)).clamp(0.0, 1.0)
    gray = (x * weights).sum(-1, keepdim=True)
    return (gray + factors[2] * (x - gray)).clamp(0.0, 1.0)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Each image of an N x C x H x W batch turned counter-clockwise by its angle about
    its centre (bilinear; what comes in from outside is 0, the mean colour after
    normalisation)."""
    radians = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                         torch.stack([sin, cos, zero], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, max_degrees: float, gen: torch.Generator) -> torch.Tensor:
    """`rotate` each image by U[-max_degrees, max_degrees]."""
    if max_degrees == 0.0:
        return x
    degrees = max_degrees * (2.0 * torch.rand(x.shape[0], generator=gen, device=x.device) - 1)
    return rotate(x, degrees)


def random_erasing(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): with probability ``cfg.erasing`` per image, zero
    (the mean colour, after normalisation) one rectangle.

    Its area is U[erasing_min_area, erasing_max_area] of the image and its aspect ratio
    log-uniform in [1/erasing_max_aspect, erasing_max_aspect]; a side longer than the
    image is cut to it, and the position is uniform over the places it fits.
    """
    if cfg.erasing == 0.0:
        return x
    n, _, h, w = x.shape
    draws = torch.rand(5, n, generator=gen, device=x.device)
    area = h * w * (cfg.erasing_min_area + (cfg.erasing_max_area - cfg.erasing_min_area)
                    * draws[0])
    aspect = torch.exp((2.0 * draws[1] - 1.0) * math.log(cfg.erasing_max_aspect))
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = ((h - eh + 1) * draws[2]).floor().clamp(max=h - 1)
    left = ((w - ew + 1) * draws[3]).floor().clamp(max=w - 1)
    erase = draws[4] < cfg.erasing
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
    cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
    inside = rows[:, :, None] & cols[:, None, :] & erase[:, None, None]
    return x.masked_fill(inside[:, None], 0.0)


def tta_views(x: torch.Tensor, flip: bool, translate: int) -> list[torch.Tensor]:
    """What test-time augmentation averages over: the batch, copies of it shifted by
    ``translate`` pixels down-right and up-left (reflection-padded, as airbench does),
    and, with ``flip``, the mirror of each."""
    views = [x]
    if translate:
        h, w = x.shape[-2:]
        padded = F.pad(x, (translate,) * 4, mode="reflect")
        views += [padded[..., :h, :w], padded[..., 2 * translate:, 2 * translate:]]
    if flip:
        views += [view.flip(3) for view in views]
    return views


def tta_logits(model: torch.nn.Module, x: torch.Tensor, *, flip: bool,
               translate: int = 0) -> torch.Tensor:
    """Float logits of ``model`` averaged over `tta_views` of the normalised batch ``x``."""
    views = tta_views(x, flip, translate)
    logits = model(views[0]).float()
    for view in views[1:]:
        logits = logits + model(view).float()
    return logits / len(views)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero (the mean, after normalisation) a size x size square per image.

    Centres are uniform over the image, so squares may be clipped at the border
    (DeVries & Taylor, 2017).
    """
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n, 1), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :] - cy + size // 2
    xs = torch.arange(w, device=x.device)[None, :] - cx + size // 2
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0.0)


class Batch(NamedTuple):
    images: torch.Tensor  # float N x C x H x W, normalised
    labels: torch.Tensor  # int64 N: the images' own classes
    targets: torch.Tensor  # int64 N, or float N x 10 class probabilities after mixing
    positions: torch.Tensor | None = None  # int64 N: the images' places in the split


def mix(x: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
        rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup, CutMix or RICAP (one of those enabled, chosen per batch) with soft targets."""
    if cfg.ricap > 0:
        others = (cfg.mixup > 0) + (cfg.cutmix > 0)
        if not others or rng.random() < 1.0 / (1 + others):
            return ricap(x, labels, cfg.ricap, gen, rng)
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or rng.random() < 0.5)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    lam = rng.betavariate(alpha, alpha)
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    if use_cutmix:
        h, w = x.shape[2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = rng.randrange(h), rng.randrange(w)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually kept
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    one_hot = F.one_hot(labels, NUM_CLASSES).to(x.dtype)
    return x, lam * one_hot + (1.0 - lam) * one_hot[perm]


def ricap(x: torch.Tensor, labels: torch.Tensor, beta: float, gen: torch.Generator,
          rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """RICAP (Takahashi et al. 2018): each image becomes four crops of four shuffles of
    the batch, tiled around a boundary point drawn from Beta(beta, beta) per axis; the
    targets are the four labels weighted by their crops' areas.

    As in the paper's code, the boundary and each crop's position are per batch, the
    shuffles per image.
    """
    n, _, h, w = x.shape
    left = round(w * rng.betavariate(beta, beta))
    top = round(h * rng.betavariate(beta, beta))
    widths, heights = (left, w - left, left, w - left), (top, top, h - top, h - top)
    corners = ((0, 0), (0, left), (top, 0), (top, left))  # each tile's top-left in the output
    out = torch.empty_like(x)
    one_hot = F.one_hot(labels, NUM_CLASSES).to(x.dtype)
    targets = torch.zeros_like(one_hot)
    for tw, th, (oy, ox) in zip(widths, heights, corners, strict=True):
        perm = torch.randperm(n, generator=gen, device=x.device)
        cy, cx = rng.randint(0, h - th), rng.randint(0, w - tw)
        out[:, :, oy:oy + th, ox:ox + tw] = x[perm, :, cy:cy + th, cx:cx + tw]
        targets += (tw * th / (h * w)) * one_hot[perm]
    return out, targets


class TrainLoader:
    """Epochs of augmented batches from a device-resident split.

    Args:
        images: uint8 N x 32 x 32 x 3 on the training device.
        labels: int64 N on the same device.
        cfg: batch size and augmentation switches.
        gen: device generator for per-image draws.
        rng: host generator for per-batch scalars.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator, rng: random.Random) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N x H x W x C, got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images, self.labels, self.cfg = images, labels, cfg
        self.gen, self.rng = gen, rng
        self.batch_size = min(cfg.batch_size, len(images))

    def __len__(self) -> int:
        # Whole batches only: equal shapes every step, and no BatchNorm over one image.
        return len(self.images) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = torch.randperm(len(self.images), generator=self.gen, device=self.images.device)
        if self.cfg.augment_ahead:
            yield from self._ahead(order)
            return
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.augment(self.images[idx], self.labels[idx], idx)

    def _ahead(self, order: torch.Tensor) -> Iterator[Batch]:
        """The epoch's images augmented up front, `AHEAD_CHUNK` images per pass, into one
        buffer (bf16, channels-last on CUDA, as airbench keeps its epoch); batches are
        slices of it, mixed (mixup, CutMix, RICAP) per batch as they are served.

        Fewer, larger kernels than augmenting batch by batch; the same augmentations,
        drawn in another order, so a run's numbers differ from the batch-by-batch ones.
        """
        used = len(self) * self.batch_size
        order = order[:used]
        cuda = self.images.is_cuda
        buffer = torch.empty((used, 3, *self.images.shape[1:3]), device=self.images.device,
                             dtype=torch.bfloat16 if cuda else torch.float32)
        if cuda:
            buffer = buffer.contiguous(memory_format=torch.channels_last)
        step = max(1, AHEAD_CHUNK // self.batch_size) * self.batch_size
        for start in range(0, used, step):
            idx = order[start:start + step]
            buffer[start:start + len(idx)] = self.augment(
                self.images[idx], self.labels[idx], mixing=False).images
        for i in range(len(self)):
            part = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx, labels = order[part], self.labels[order[part]]
            x: torch.Tensor = buffer[part]
            targets = labels
            if self.mixing:
                x, targets = mix(x.float(), labels, self.cfg, self.gen, self.rng)
            yield Batch(x, labels, targets, idx)

    @property
    def mixing(self) -> bool:
        return self.cfg.mixup > 0 or self.cfg.cutmix > 0 or self.cfg.ricap > 0

    def augment(self, images: torch.Tensor, labels: torch.Tensor,
                index: torch.Tensor | None = None, *, mixing: bool = True) -> Batch:
        cfg = self.cfg
        if cfg.policy != "none":  # on the uint8 image, as PIL's ops are defined
            images = apply_policy(images, cfg.policy, self.gen, ops=cfg.policy_ops,
                                  magnitude=cfg.policy_magnitude)
        if cfg.jitter > 0:  # on the [0, 1] image, before the normalisation
            x = normalize(255.0 * color_jitter(images.float() / 255.0, cfg.jitter, self.gen))
        else:
            x = normalize(images)
        x = random_rotation(x, cfg.rotate, self.gen)
        if cfg.crop:
            x = random_crop(x, cfg.crop_padding, self.gen)
        if cfg.flip:
            x = random_flip(x, self.gen)
        x = cutout(x, cfg.cutout, self.gen)
        x = random_erasing(x, cfg, self.gen)
        targets: torch.Tensor = labels
        if mixing and self.mixing:
            x, targets = mix(x, labels, cfg, self.gen, self.rng)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, labels, targets, index)
