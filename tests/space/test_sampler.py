"""The budget-aware sampler: few rejected trials, enqueued parameters kept."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from models import BASELINES
from space import BudgetAwareSampler, load_spec, make_pruner, make_sampler
from space.dryrun import dry_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_default_sampler_is_budget_aware_tpe() -> None:
    sampler = make_sampler(load_spec("resnet-budget"), seed=0)
    assert isinstance(sampler, BudgetAwareSampler)
    assert isinstance(sampler.base, optuna.samplers.TPESampler)
    plain = make_sampler(load_spec("resnet-budget"), seed=0, budget_aware=False)
    assert isinstance(plain, optuna.samplers.TPESampler)
    assert isinstance(make_pruner(load_spec("resnet-budget")), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(load_spec("smoke")), optuna.pruners.MedianPruner)


def test_budget_aware_sampler_rejects_fewer_than_random_sampling() -> None:
    spec = load_spec("resnet-budget")
    random = dry_run(spec, 120, seed=0, sampler="random")
    aware = dry_run(spec, 120, seed=0, sampler="study")
    assert random.rejection_rate > 0.15  # the space is hard enough to show the difference
    assert aware.rejection_rate <= 0.02
    assert aware.inner_draws > aware.proposals  # it did redraw
    assert max(aware.n_params) <= spec.budget


def test_dry_run_is_deterministic_for_a_seed() -> None:
    spec = load_spec("smoke")
    first = dry_run(spec, 30, seed=5)
    second = dry_run(spec, 30, seed=5)
    assert first.n_params == second.n_params
    assert dry_run(spec, 30, seed=6).n_params != first.n_params


def test_enqueued_baseline_is_served_unchanged(tmp_path: Path) -> None:
    spec = load_spec("resnet-budget")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=make_sampler(spec, seed=0))
    params = spec.arch_params(BASELINES["resnet-443"])
    study.enqueue_trial(params)
    archs = []

    def objective(trial: optuna.Trial) -> float:
        candidate = spec.sample(trial)
        archs.append(candidate.arch)
        return 0.5

    study.optimize(objective, n_trials=3)
    assert archs[0] == BASELINES["resnet-443"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_budget_nothing_fits_ends_in_an_honest_rejection(tmp_path: Path) -> None:
    path = tmp_path / "tight.toml"
    path.write_text(
        "[study]\nbudget = 1000\n"
        "[arch]\nstages = 2\nblocks = [1, 2]\nwidth = [16, 32]\n"
        "[sampler]\ntype = \"random\"\nmax_draws = 5\n"
    )
    spec = load_spec(path)
    sampler = make_sampler(spec, seed=0)
    assert isinstance(sampler, BudgetAwareSampler)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: spec.sample(t).n_params, n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert sampler.draws == 15 and sampler.exhausted == 3


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_served_parameters_are_the_ones_that_fit(kind: str, tmp_path: Path) -> None:
    # The trial's stored parameters rebuild an architecture within the budget.
    spec = load_spec("smoke")
    path = tmp_path / "s.toml"
    text = spec.source  # built-in; rebuild the file with another sampler type
    assert text.startswith("built-in")
    sampler = make_sampler(spec, seed=1)
    assert isinstance(sampler, BudgetAwareSampler)
    if kind == "random":
        sampler = BudgetAwareSampler(optuna.samplers.RandomSampler(seed=1), spec.sample_arch,
                                     spec.budgets(), 100)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                storage=f"sqlite:///{path.with_suffix('.db')}")
    study.optimize(lambda t: spec.sample(t).n_params / spec.budget, n_trials=25)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        rebuilt = spec.sample_arch(optuna.trial.FixedTrial(t.params))
        from models import count_params
        assert count_params(rebuilt) == round(t.value * spec.budget) <= spec.budget
