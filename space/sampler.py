"""The budget-aware sampler, and `Budget`: a cost function with a limit.

A plain sampler proposes architectures without knowing the budget; every one
over it becomes a pruned trial: a wasted trial number, database writes and, for
a learning sampler, a data point with no value. `BudgetAwareSampler` instead
draws a whole architecture from the base sampler through a proposal function,
costs it (microseconds), and draws again while it is over a budget, before the
trial sees any parameter. It knows nothing of study files (`space.factory`
wires it to one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.study import Study

    from models.config import ArchConfig
    from space.dims import Suggester


@dataclass(frozen=True)
class Budget:
    """A limit on a cost of an architecture, e.g. ``Budget("parameters", count_params, 5e6)``."""

    name: str
    cost: Callable[[ArchConfig], float]
    limit: float  # inclusive

    def fits(self, arch: ArchConfig) -> bool:
        return self.cost(arch) <= self.limit


class _Proposal:
    """A stand-in trial that resolves parameters the way `optuna.Trial` does.

    Order: enqueued (fixed) values, single-valued distributions, the base
    sampler's relative draw, then the base sampler's independent draw.
    """

    def __init__(self, study: Study, trial: FrozenTrial, base: BaseSampler,
                 relative: dict[str, Any], search_space: dict[str, BaseDistribution]) -> None:
        self._study = study
        self._trial = trial
        self._base = base
        self._relative = relative
        self._space = search_space
        self._fixed: dict[str, Any] = trial.system_attrs.get("fixed_params", {})
        self.params: dict[str, Any] = {}

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        if name in self._fixed:
            value = self._fixed[name]
        elif dist.single():
            value = optuna.distributions._get_single_value(dist)
        elif name in self._relative and name in self._space and dist._contains(
            dist.to_internal_repr(self._relative[name])
        ):
            value = self._relative[name]
        else:
            value = self._base.sample_independent(self._study, self._trial, name, dist)
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        return int(self._suggest(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._suggest(name, FloatDistribution(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(name, CategoricalDistribution(choices))


REPEAT_PATIENCE = 10  # repeats in a row after which a sampler's proposals are given up


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class BudgetAwareSampler(BaseSampler):
    """Wraps a sampler so that architectures over a budget are redrawn, not tried.

    ``propose(suggester)`` turns parameters into an architecture, the way the
    objective will (e.g. `space.StudySpec.sample_arch`); an architecture fits
    when it is within every one of ``budgets``.

    Redraws happen in `sample_relative`, which Optuna calls before a trial's first
    sampled parameter. Up to ``max_draws`` proposals are drawn; the first within
    the budget is served to the trial (relative parameters from `sample_relative`,
    the rest from `sample_independent`). A model-based base sampler can settle on a
    region where nothing fits (it never sees the redrawn proposals): then up to
    ``max_draws`` random proposals follow, and the first that fits is served. Only
    if none of those fits either is the last one served, and the space rejects it
    as usual. Enqueued parameters are honoured. With ``dedupe`` (the default), a
    proposal with the very parameters of a trial already in the study (finished,
    running or queued) is drawn again too, as one over the budget is; only when
    nothing new fits is a repeat served.

    Attributes:
        draws: proposals drawn so far, in this process.
        served: trials served so far.
        fallbacks: trials served a random proposal because the base sampler's did not fit.
        exhausted: trials for which no proposal fitted.
        repeats: proposals redrawn because a trial already had their parameters.
        exhausted_in_a_row: the latest trials for which none fitted (a space where
            hardly anything fits the budget: the search should stop, not prune on).
    """

    def __init__(self, base: BaseSampler, propose: Callable[[Suggester], ArchConfig],
                 budgets: Sequence[Budget], max_draws: int = 100, dedupe: bool = True) -> None:
        if max_draws < 1:
            raise ValueError(f"max_draws must be >= 1, got {max_draws=}")
        self._dedupe = dedupe
        self.repeats = 0
        self._base = base
        self._propose = propose
        self._budgets = tuple(budgets)
        self._max_draws = max_draws
        self._pending: dict[int, dict[str, Any]] = {}
        # TPE's own random sampler when it has one: seeded with the study's seed.
        self._random: BaseSampler = (getattr(base, "_random_sampler", None)
                                     or optuna.samplers.RandomSampler())
        self.draws = 0
        self.served = 0
        self.fallbacks = 0
        self.exhausted = 0
        self.exhausted_in_a_row = 0

    @property
    def base(self) -> BaseSampler:
        return self._base

    def __str__(self) -> str:
        return f"BudgetAware({self._base.__class__.__name__})"

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        # Parameters a trial already has (finished, running or queued) are redrawn too: in
        # a discrete space a converging TPE proposes the same network again and again, and
        # each repeat is a trial that teaches nothing new.
        seen = (set() if not self._dedupe or trial.system_attrs.get("fixed_params") else
                {_key(t.params) for t in study.get_trials(deepcopy=False)})
        repeats = self.repeats
        relative, proposal = self._draw(study, trial, search_space, self._base, seen,
                                        REPEAT_PATIENCE)
        if proposal is None and not isinstance(self._base, optuna.samplers.RandomSampler):
            # Nothing new the model-based sampler proposed fits: random proposals.
            relative, proposal = self._draw(study, trial, search_space, self._random, seen)
            self.fallbacks += proposal is not None
        if proposal is None and self.repeats > repeats:  # nothing new fits: a repeat, then
            relative, proposal = self._draw(study, trial, search_space, self._base, set())
        if proposal is None:
            self.exhausted += 1
            self.exhausted_in_a_row += 1
        else:
            self.exhausted_in_a_row = 0
        self.served += 1
        self._pending[trial.number] = self._last.params if proposal is None else proposal.params
        return relative

    def _draw(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution],
              sampler: BaseSampler, seen: set[tuple[tuple[str, str], ...]],
              patience: int | None = None) -> tuple[dict[str, Any], _Proposal | None]:
        """Up to ``max_draws`` proposals of ``sampler``: the relative parameters and the
        first that fits every budget and is not in ``seen`` (None if none was, or after
        ``patience`` repeats; `_last` is the last drawn)."""
        relative: dict[str, Any] = {}
        repeated = 0
        patience = self._max_draws if patience is None else patience
        for _ in range(self._max_draws):
            relative = sampler.sample_relative(study, trial, search_space)
            proposal = _Proposal(study, trial, sampler, relative, search_space)
            arch = self._propose(proposal)
            self.draws += 1
            self._last = proposal
            if seen and _key(proposal.params) in seen:
                self.repeats += 1
                repeated += 1
                if repeated >= patience:  # it has settled: let another sampler try
                    return relative, None
                continue
            if all(budget.fits(arch) for budget in self._budgets):
                return relative, proposal
        return relative, None

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        pending = self._pending.get(trial.number, {})
        if param_name in pending:
            value = pending[param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._pending.pop(trial.number, None)
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
