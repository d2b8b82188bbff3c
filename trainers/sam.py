"""Sharpness-aware minimisation: SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021).

A SAM step takes the gradient at w, moves to the worst nearby point
``w + e``, with ``e = rho * g / ||g||`` (ASAM: ``e = rho * T^2 g / ||T g||`` with
``T = |w| + eta``, which makes the neighbourhood scale with each weight), takes the
gradient there, returns to w and lets the base optimizer (SGD with Nesterov
momentum, weight decay as configured) step with that second gradient. The first
pass is the ordinary training pass, so its loss and logits are what the epoch
reports. Batch norm's running statistics are updated by the first pass only: the
second pass's update is undone, so the statistics match a plain step's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ASAM_ETA = 0.01  # ASAM's offset in T = |w| + eta, so zero weights still move


class Sam:
    """Two-pass steps for the parameters of ``optimizer`` (the base optimizer).

    Args:
        model: the trained model (for its batch-norm statistics).
        optimizer: the base optimizer; it takes the step.
        rho: radius of the perturbation.
        adaptive: ASAM instead of SAM.
        every: SAM on every ``every``-th step, a plain step on the others.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, rho: float,
                 adaptive: bool = False, every: int = 1) -> None:
        self.model, self.optimizer = model, optimizer
        self.rho, self.adaptive, self.every = rho, adaptive, every

    def due(self, step: int) -> bool:
        """Whether step ``step`` (counted from 1 in each epoch) is a SAM step."""
        return step % self.every == 0

    @torch.no_grad()
    def perturb(self) -> list[torch.Tensor]:
        """Move the weights to ``w + e`` from the gradients they hold; the saved ``w``."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
        saved = [p.detach().clone() for p in params]
        grads = [p.grad for p in params if p.grad is not None]
        steps: list[torch.Tensor]
        if self.adaptive:
            scale = torch._foreach_add(torch._foreach_abs(saved), ASAM_ETA)
            scaled = list(torch._foreach_mul(grads, scale))  # T g
            norm = _global_norm(scaled)
            steps = list(torch._foreach_mul(scaled, scale))  # T^2 g
        else:
            norm = _global_norm(grads)
            steps = [g.clone() for g in grads]
        torch._foreach_mul_(steps, self.rho / (norm + 1e-12))
        torch._foreach_add_(params, steps)
        self._params = params
        return saved

    @torch.no_grad()
    def restore(self, saved: list[torch.Tensor]) -> None:
        """Put back the weights `perturb` saved, exactly."""
        torch._foreach_copy_(self._params, saved)

    def second_pass(self, loss_at: Callable[[], torch.Tensor]) -> None:
        """Replace the gradients by those at ``w + e``: ``loss_at()`` computes the loss of
        the same batch; batch-norm statistics are left as the first pass set them."""
        saved = self.perturb()
        stats = _norm_buffers(self.model)
        kept = [b.clone() for b in stats]
        self.optimizer.zero_grad(set_to_none=True)
        loss_at().backward()
        if stats:
            with torch.no_grad():
                torch._foreach_copy_(stats, kept)
        self.restore(saved)


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _norm_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Running statistics (and counters) of the batch-norm layers."""
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in m.buffers()]
