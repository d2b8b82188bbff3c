"""Learning-rate schedules: the multiplier of the peak rate at each optimizer step."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from trainers.config import TrainConfig


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each optimizer step.

    ``cosine``: linear warm-up over ``warmup_epochs``, then a cosine decay to
    ``lr_floor`` (a fraction of the peak; 0 decays to nothing). ``onecycle``: linear up
    from lr/25, then linearly down to 0. ``multistep``: the same warm-up, then the
    peak times ``gamma`` for every milestone passed (milestones are fractions of the
    run, so a recipe keeps its shape from a 15-epoch trial to a 200-epoch final run).
    """
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        # Linear up from lr/25 over the warmup (a quarter of the run if none), then down.
        up = max(1, round((cfg.warmup_epochs or cfg.epochs / 4) * steps_per_epoch))

        def onecycle(step: int) -> float:
            if step < up:
                return 0.04 + 0.96 * step / up
            return max(0.0, (total - step) / max(1, total - up))

        return onecycle
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "multistep":
        cuts = [round(f * total) for f in cfg.milestone_fractions()]

        def multistep(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return float(cfg.gamma ** bisect.bisect_right(cuts, step))

        return multistep
    floor = cfg.lr_floor

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        decay = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return decay if floor == 0.0 else floor + (1.0 - floor) * decay

    return cosine
