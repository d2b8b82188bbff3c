"""`ModelEma`: an exponential moving average of a model's weights and BN statistics.

The average covers the parameters and the floating-point buffers (batch norm's
running mean and variance), so the averaged weights are evaluated with statistics
that match them rather than the raw model's latest ones; integer buffers (BN's
batch counter) are copied. With warm-up the decay at update t is
``min(decay, (1 + t) / (10 + t))``, so the first updates follow the model closely
instead of dragging in the random initialisation for thousands of steps.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    """EMA of ``model``: call `update` after every optimizer step.

    Args:
        model: the trained model (read, never written).
        decay: the per-update decay, in [0, 1).
        warmup: use ``min(decay, (1 + t) / (10 + t))`` at update t.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.source, self.decay, self.warmup = model, decay, warmup
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0  # updates done; saved in checkpoints for the warm-up
        # The tensors of each side, listed once: an update is two multi-tensor kernels
        # (a lerp of the floats, a copy of the integer buffers), not one per tensor.
        self._floats = [*self.model.parameters(), *_float_buffers(self.model)]
        self._their_floats = [p.detach() for p in (*model.parameters(), *_float_buffers(model))]
        self._ints = [b for b in self.model.buffers() if not b.is_floating_point()]
        self._their_ints = [b for b in model.buffers() if not b.is_floating_point()]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._floats, self._their_floats, 1.0 - self.current_decay())
        if self._ints:
            torch._foreach_copy_(self._ints, self._their_ints)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], steps_done: int) -> None:
        """Restore from `state_dict`, or from a checkpoint of the release before it, whose
        "ema" entry is the bare model state: that run had no warm-up, so it goes on
        without one, its update count ``steps_done``."""
        if "model" in state and "updates" in state:
            self.model.load_state_dict(state["model"])
            self.updates = int(state["updates"])
        else:
            self.model.load_state_dict(state)
            self.updates, self.warmup = steps_done, False


def _float_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]
