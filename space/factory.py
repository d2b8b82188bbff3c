"""Samplers and pruners from a study file's ``[sampler]`` and ``[pruner]`` options.

Takes plain options, a proposal function and budgets, not a `space.StudySpec`,
so nothing here imports the module that describes study files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import BaseSampler

from space.sampler import Budget, BudgetAwareSampler

if TYPE_CHECKING:
    from models.config import ArchConfig
    from space.dims import Suggester


def build_sampler(options: dict[str, Any], *, propose: Callable[[Suggester], ArchConfig],
                  budgets: Sequence[Budget], seed: int | None = None,
                  budget_aware: bool | None = None) -> BaseSampler:
    """The sampler ``options`` name; ``seed`` overrides theirs.

    With budget awareness (``budget_aware``, else the options', else true) the
    sampler is wrapped in a `BudgetAwareSampler` over ``propose`` and ``budgets``.
    """
    opts = dict(options)
    kind = opts.pop("type", "tpe")
    file_seed = opts.pop("seed", None)
    seed = file_seed if seed is None else seed
    file_wrap = opts.pop("budget_aware", True)
    wrap = file_wrap if budget_aware is None else budget_aware
    max_draws = opts.pop("max_draws", 100)
    dedupe = bool(opts.pop("dedupe", True))
    base: BaseSampler
    if kind == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    elif kind == "nsga2":
        base = optuna.samplers.NSGAIISampler(seed=seed, **{"population_size": 20, **opts})
    else:
        multivariate = opts.get("multivariate", True)
        # group decomposition handles the conditional (per-stage) parameters; it needs
        # multivariate TPE.
        tpe = {"n_startup_trials": 10, "multivariate": multivariate, "group": multivariate,
               "constant_liar": True, **opts}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            base = optuna.samplers.TPESampler(seed=seed, **tpe)
    return BudgetAwareSampler(base, propose, budgets, max_draws, dedupe) if wrap else base


def build_pruner(options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner ``options`` name; it sees validation accuracy once per epoch."""
    opts = dict(options)
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
