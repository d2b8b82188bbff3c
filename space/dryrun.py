"""A dry run of a study's space: proposals only, no training.

Each accepted proposal is scored by its parameter count over the budget, a
stand-in for accuracy (which grows with size under a budget), so that a learning
sampler moves toward the budget's edge as it does in a real search. That edge is
where over-budget proposals happen, so the rejection rate measured here is the
one a search will see.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from space.sampler import BudgetAwareSampler
from space.spec import StudySpec, make_sampler

# "study": the study file's sampler; "plain": the same without budget-aware redraws;
# "random": pure random sampling with no budget awareness.
SAMPLERS = ("study", "plain", "random")


@dataclass
class DryRunResult:
    """What a dry run saw."""

    study: str
    sampler: str  # description of the sampler used
    proposals: int  # trials proposed
    rejected: int  # trials over the budget
    seconds: float
    inner_draws: int  # proposals drawn inside a budget-aware sampler (0 if none)
    n_params: list[int] = field(default_factory=list)  # of accepted proposals
    # Accepted proposals by the network's block type, and by branch regulariser.
    block_types: Counter[str] = field(default_factory=Counter)
    branch_drops: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.proposals - self.rejected

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.proposals if self.proposals else 0.0

    @property
    def proposals_per_s(self) -> float:
        return self.proposals / self.seconds if self.seconds else float("inf")

    def quantiles(self) -> dict[str, int]:
        """min, p10, median, p90, max of the accepted parameter counts."""
        xs = sorted(self.n_params)
        if not xs:
            return {}
        deciles = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else xs * 9
        return {"min": xs[0], "p10": int(deciles[0]), "median": int(statistics.median(xs)),
                "p90": int(deciles[-1]), "max": xs[-1]}

    def to_dict(self) -> dict[str, object]:
        return {
            "study": self.study, "sampler": self.sampler, "proposals": self.proposals,
            "accepted": self.accepted, "rejected": self.rejected,
            "rejection_rate": round(self.rejection_rate, 4), "seconds": round(self.seconds, 3),
            "proposals_per_s": round(self.proposals_per_s, 2), "inner_draws": self.inner_draws,
            "n_params": self.quantiles(), "block_types": dict(self.block_types.most_common()),
            "branch_drops": dict(self.branch_drops.most_common()),
        }


def dry_run(
    spec: StudySpec,
    n: int,
    *,
    seed: int = 0,
    sampler: str = "study",
    progress: Callable[[int, int], None] | None = None,
) -> DryRunResult:
    """Propose ``n`` candidates from ``spec`` in an in-memory study.

    Args:
        spec: the study.
        n: proposals to make.
        seed: sampler seed.
        sampler: ``"study"`` for the study file's sampler, ``"plain"`` for the same
            without budget-aware redraws, ``"random"`` for pure random sampling.
        progress: called as ``progress(done, n)`` after each proposal.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n=}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler=}")
    if sampler == "random":
        chosen: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        chosen = make_sampler(spec, seed=seed, budget_aware=None if sampler == "study" else False)
    result = DryRunResult(spec.name, _describe(chosen), 0, 0, 0.0, 0)

    def objective(trial: optuna.Trial) -> float:
        candidate = spec.sample(trial)
        result.n_params.append(candidate.n_params)
        result.block_types[candidate.arch.block.name] += 1
        result.branch_drops[candidate.arch.branch_drop] += 1
        return candidate.n_params / spec.budget

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        result.proposals += 1
        result.rejected += trial.state == optuna.trial.TrialState.PRUNED
        if progress is not None:
            progress(result.proposals, n)

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=chosen,
                                    pruner=optuna.pruners.NopPruner())
        start = time.perf_counter()
        study.optimize(objective, n_trials=n, callbacks=[count])
        result.seconds = time.perf_counter() - start
    finally:
        optuna.logging.set_verbosity(previous)
    if isinstance(chosen, BudgetAwareSampler):
        result.inner_draws = chosen.draws
    return result


def _describe(sampler: optuna.samplers.BaseSampler) -> str:
    if isinstance(sampler, BudgetAwareSampler):
        return f"{sampler.base.__class__.__name__} + budget-aware redraws"
    return sampler.__class__.__name__
