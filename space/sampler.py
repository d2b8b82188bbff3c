"""Samplers and pruners named by a study file, and the budget-aware sampler.

A plain sampler proposes architectures without knowing the budget; every one
over it becomes a pruned trial: a wasted trial number, database writes and, for
a learning sampler, a data point with no value. `BudgetAwareSampler` instead
draws a whole architecture from the base sampler, counts it (microseconds), and
draws again while it is over the budget, before the trial sees any parameter.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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

from models import count_params

if TYPE_CHECKING:
    from optuna.study import Study

    from space.spec import StudySpec


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


class BudgetAwareSampler(BaseSampler):
    """Wraps a sampler so that architectures over the budget are redrawn, not tried.

    Redraws happen in `sample_relative`, which Optuna calls before a trial's first
    sampled parameter. Up to ``max_draws`` proposals are drawn; the first within
    the budget is served to the trial (relative parameters from `sample_relative`,
    the rest from `sample_independent`). If none fits, the last one is served and
    the space rejects it as usual. Enqueued parameters are honoured.

    Attributes:
        draws: proposals drawn so far, in this process.
        served: trials served so far.
        exhausted: trials for which no proposal fitted.
    """

    def __init__(self, base: BaseSampler, spec: StudySpec, max_draws: int = 100) -> None:
        if max_draws < 1:
            raise ValueError(f"max_draws must be >= 1, got {max_draws=}")
        self._base = base
        self._spec = spec
        self._max_draws = max_draws
        self._pending: dict[int, dict[str, Any]] = {}
        self.draws = 0
        self.served = 0
        self.exhausted = 0

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
        for _ in range(self._max_draws):
            relative = self._base.sample_relative(study, trial, search_space)
            proposal = _Proposal(study, trial, self._base, relative, search_space)
            arch = self._spec.sample_arch(proposal)
            self.draws += 1
            if count_params(arch) <= self._spec.budget:
                break
        else:
            self.exhausted += 1
        self.served += 1
        self._pending[trial.number] = proposal.params
        return relative

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


def make_sampler(spec: StudySpec, *, seed: int | None = None,
                 budget_aware: bool | None = None) -> BaseSampler:
    """The sampler the study file names; ``seed`` overrides the file's seed."""
    opts = dict(spec.sampler)
    kind = opts.pop("type", "tpe")
    file_seed = opts.pop("seed", None)
    seed = file_seed if seed is None else seed
    file_wrap = opts.pop("budget_aware", True)
    wrap = file_wrap if budget_aware is None else budget_aware
    max_draws = opts.pop("max_draws", 100)
    base: BaseSampler
    if kind == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    else:
        multivariate = opts.get("multivariate", True)
        # group decomposition handles the conditional (per-stage) parameters; it needs
        # multivariate TPE.
        tpe = {"n_startup_trials": 10, "multivariate": multivariate, "group": multivariate,
               "constant_liar": True, **opts}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            base = optuna.samplers.TPESampler(seed=seed, **tpe)
    return BudgetAwareSampler(base, spec, max_draws) if wrap else base


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The pruner the study file names; it sees validation accuracy once per epoch."""
    opts = dict(spec.pruner)
    kind = opts.pop("type", "hyperband")
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "reduction_factor": 3, **opts})
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if kind == "median":
        return optuna.pruners.MedianPruner(**opts)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**{"percentile": 25.0, **opts})
    return optuna.pruners.NopPruner()
