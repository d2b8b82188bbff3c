"""Random regularisers of the residual branch: drop-path, ShakeDrop and Shake-Shake mixing.

All draw from torch's global generators on the input's device, which `fit` seeds
and its checkpoints save and restore, so a resumed run draws what an
uninterrupted one would. Nothing is drawn on the host and no Python value depends
on a draw, so `torch.compile` traces them without graph breaks. Different forward
and backward weights come from one identity instead of a custom autograd function:
``b * y + ((f - b) * y).detach()`` is ``f * y`` forward and has gradient ``b``.

Each behaves as its expectation in eval mode: evaluation is deterministic, and the
mean of many training passes equals it.
"""

from __future__ import annotations

import torch
from torch import nn


def _per_image(x: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Uniform [0, 1) draws shaped to scale ``x`` by image (or one for the batch)."""
    shape = (x.shape[0] if per_image else 1,) + (1,) * (x.dim() - 1)
    return torch.rand(shape, device=x.device, dtype=x.dtype)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the branch of an image with
    probability ``rate``, scale the kept ones by 1/(1 - rate); identity in eval."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate=}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = (_per_image(x) >= self.rate).to(x.dtype)
        return x * keep / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


class ShakeDrop(nn.Module):
    """ShakeDrop (Yamada et al. 2018): with probability ``rate`` an image's branch is
    scaled by alpha ~ U[-1, 1] forward and beta ~ U[0, 1] backward, else kept as is;
    in eval the branch is scaled by its expectation, 1 - rate."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate=}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1.0 - self.rate)
        if self.rate == 0.0:
            return x
        gate = (_per_image(x) >= self.rate).to(x.dtype)
        forward = gate + (1.0 - gate) * (2.0 * _per_image(x) - 1.0)
        backward = gate + (1.0 - gate) * _per_image(x)
        return backward * x + ((forward - backward) * x).detach()

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


def shake_mix(a: torch.Tensor, b: torch.Tensor, *, training: bool, backward: bool = True,
              per_image: bool = True) -> torch.Tensor:
    """Shake-Shake: ``alpha * a + (1 - alpha) * b`` forward with alpha ~ U[0, 1], gradients
    weighted by an independent beta (``backward``; else by alpha); 0.5/0.5 in eval."""
    if not training:
        return 0.5 * (a + b)
    alpha = _per_image(a, per_image)
    beta = _per_image(a, per_image) if backward else alpha
    return beta * a + (1.0 - beta) * b + ((alpha - beta) * (a - b)).detach()


# What ArchConfig.branch_drop names; "none" builds nothing.
BRANCH_DROPS: dict[str, type[nn.Module]] = {"path": DropPath, "shakedrop": ShakeDrop}
