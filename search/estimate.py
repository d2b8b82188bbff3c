"""What one trial costs on this machine's CPU, said before a CPU search starts.

A newcomer without a GPU who runs the GPU-sized default study should learn at once
that each trial will take most of an hour there, not after the first one. The
estimate times two training steps of the study's first candidate (the trial the
search trains first: its first queued trial, else the space's first proposal) at
the recipe's batch size on random images, after a warm-up step, and scales them by
the steps of a trial plus its validation passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import optuna

GPU_HINT = "a GPU takes seconds"
SLOW_TRIAL_S = 300.0  # above this, point the newcomer at the CPU-sized study


@dataclass(frozen=True)
class TrialCost:
    arch: str  # the candidate timed, in words
    step_s: float  # seconds per training step at the recipe's batch size
    steps: int  # training steps per trial (all epochs)
    trial_s: float  # the estimate for one trial, validation included

    def describe(self, cpu_study: str) -> str:
        minutes = self.trial_s / 60
        size = (f"about {minutes / 60:.1f} h" if minutes >= 90 else
                f"about {minutes:.0f} min" if minutes >= 1.5 else
                f"about {self.trial_s:.0f} s")
        line = (f"about one trial on this CPU: {size} ({self.step_s:.2f} s per training "
                f"step of {self.arch}, {self.steps:,} steps); {GPU_HINT}")
        if self.trial_s > SLOW_TRIAL_S:
            line += (f". For a search that ends in minutes on a CPU: search run --study "
                     f"{cpu_study}")
        return line


def first_candidate(spec: Any, study: optuna.Study) -> Any:
    """The candidate the search trains first: the first queued trial's architecture (a
    queued baseline fixes no recipe: a random one), else the space's first random
    proposal within the budget."""
    from models import count_params
    from space import Candidate, OverBudget

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    waiting = [t for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.WAITING]
    if waiting:
        # An enqueued trial keeps its parameters in "fixed_params" until it runs.
        params = waiting[0].system_attrs.get("fixed_params") or waiting[0].params
        try:
            arch = spec.sample_arch(optuna.trial.FixedTrial(dict(params)))
            return Candidate(arch, spec.sample_train(probe.ask()), count_params(arch), {})
        except ValueError:
            pass
    for _ in range(200):
        trial = probe.ask()
        try:
            return spec.sample(trial)
        except OverBudget:
            probe.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return None


def trial_cost(spec: Any, study: optuna.Study, n_train: int) -> TrialCost | None:
    """The estimate for one of ``spec``'s trials on this CPU (``n_train``: training images
    in the data set); None when there is nothing to time."""
    import torch
    import torch.nn.functional as F

    from models import build_model

    candidate = first_candidate(spec, study)
    if candidate is None:
        return None
    cfg = candidate.train
    available = n_train - cfg.val_size
    images = min(cfg.train_subset or available, available)
    batch = min(cfg.batch_size, images)
    torch.manual_seed(0)
    model = build_model(candidate.arch).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    times: list[float] = []
    # A warm-up step, then two timed (one where a step takes over a second).
    while len(times) < (2 if times and times[0] > 1.0 else 3):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    step = min(times[1:])
    steps = images // batch * cfg.epochs
    # Validation: a forward pass (about a third of a step) per image, twice with flips,
    # on the last epoch or on every one.
    passes = (2 if cfg.tta_flip else 1)
    val_epochs = cfg.epochs if cfg.val_tta == "every" else 1
    val_s = step / 3 * math.ceil(cfg.val_size / batch) * (passes * val_epochs
                                                           + cfg.epochs - val_epochs)
    return TrialCost(candidate.arch.describe(), step, steps, step * steps + val_s)
