"""Knowledge distillation: trained networks (teachers) teach a student through the loss.

The loss of a batch is ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``
(Hinton et al. 2015), where ``x_T`` is softmax at temperature ``T`` and the teacher
is the weighted mean of its members' softmax outputs. In PyTorch's terms the first
term is ``kl_div(log_softmax(student / T), teacher_T, reduction="batchmean")``. CE is
the run's usual loss: against the labels, or the soft targets of mixup, CutMix or
RICAP, with label smoothing. The teachers see the same augmented (and mixed) batch
as the student, in eval mode, without gradients, under the same autocast.

With a cache, the teachers' outputs for the un-augmented training images are
computed once and looked up per image instead (`Teacher.prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.augment import Batch, normalize
from trainers.config import TrainConfig
from trainers.safeio import atomic_writer

CACHE_FORMAT = 1


class TeacherCacheError(ValueError):
    """A teachers' output cache that does not belong to this run."""


def kd_loss(student: torch.Tensor, teacher_probs: torch.Tensor, targets: torch.Tensor,
            *, alpha: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``.

    Args:
        student: float logits, N x classes.
        teacher_probs: the teachers' softmax at ``temperature``, N x classes.
        targets: int64 labels or float class probabilities (mixed batches).
    """
    ce = F.cross_entropy(student, targets, label_smoothing=label_smoothing)
    log_student = F.log_softmax(student / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs, reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * ce


def batch_loss(logits: torch.Tensor, batch: Batch, cfg: TrainConfig,
               teacher_probs: torch.Tensor | None) -> torch.Tensor:
    """The training loss of a batch: cross-entropy, or `kd_loss` with teachers."""
    if teacher_probs is None:
        return F.cross_entropy(logits.float(), batch.targets, label_smoothing=cfg.label_smoothing)
    return kd_loss(logits.float(), teacher_probs, batch.targets, alpha=cfg.kd_alpha,
                   temperature=cfg.kd_temperature, label_smoothing=cfg.label_smoothing)


class Teacher:
    """Trained networks whose averaged, softened outputs teach a student.

    Args:
        members: the teachers' models (moved to eval mode, gradients off).
        weights: each member's weight in the average; default equal.
        digests: sha256 of each member's weights file (names the cache's owners).
        cache: where `prepare` keeps the outputs for the un-augmented training images;
            None: the members run on every augmented batch (the default).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 digests: Sequence[str] = (), cache: Path | None = None) -> None:
        if not members:
            raise ValueError("a teacher needs at least one member")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(members)} non-negative numbers with a "
                             f"positive sum, got {weights}")
        self.members = [m.eval().requires_grad_(False) for m in members]
        self.weights = [w / sum(weights) for w in weights]
        self.digests, self.cache = list(digests), cache
        self.cached: torch.Tensor | None = None

    @torch.no_grad()
    def probs(self, images: torch.Tensor, temperature: float) -> torch.Tensor:
        """float32 N x classes: the members' softmax at ``temperature``, weighted."""
        device = images.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            total = None
            for weight, member in zip(self.weights, self.members, strict=True):
                p = weight * F.softmax(member(images).float() / temperature, dim=1)
                total = p if total is None else total + p
        assert total is not None
        return total

    def soft_targets(self, batch: Batch, temperature: float) -> torch.Tensor:
        """The teachers' probabilities for a training batch (cached ones if prepared)."""
        if self.cached is not None:
            if batch.positions is None:
                raise ValueError("a cached teacher needs the batch's image indices")
            return self.cached[batch.positions]
        return self.probs(batch.images, temperature)

    def prepare(self, train_images: torch.Tensor, cfg: TrainConfig, data_digest: str) -> None:
        """With a cache: load (or compute and write) the outputs for ``train_images``
        (uint8 N x H x W x C, the run's training split in its order).

        Raises:
            TeacherCacheError: the cache file is of other teachers, data or temperature.
        """
        if self.cache is None:
            return
        owner = {"format": CACHE_FORMAT, "teachers": self.digests, "weights": self.weights,
                 "data_digest": data_digest, "temperature": cfg.kd_temperature,
                 "images": len(train_images), "fold": cfg.fold, "val_size": cfg.val_size,
                 "train_subset": cfg.train_subset}
        if self.cache.exists():
            stored: dict[str, Any] = torch.load(self.cache, map_location="cpu",
                                                weights_only=True)
            differs = sorted(k for k, v in owner.items() if stored.get(k) != v)
            if differs:
                raise TeacherCacheError(f"{self.cache}: cached teacher outputs of another "
                                        f"run (differ in {', '.join(differs)}); delete it "
                                        "to compute them again")
            self.cached = stored["probs"].to(train_images.device)
            return
        chunks = [self.probs(normalize(train_images[i:i + 1000]), cfg.kd_temperature)
                  for i in range(0, len(train_images), 1000)]
        self.cached = torch.cat(chunks)
        with atomic_writer(self.cache) as f:
            torch.save({**owner, "probs": self.cached.cpu()}, f)
