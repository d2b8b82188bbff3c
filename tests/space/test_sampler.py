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
    assert sampler.exhausted == 3
    # 5 draws a trial; a trial that also drew a repeat of an earlier one (a tiny space)
    # then tries the repeats too, 5 more.
    assert sampler.draws in (15, 20, 25)


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


def _tiny_search(dedupe: bool, n_trials: int) -> tuple[list[tuple[str, ...]], BudgetAwareSampler]:
    """TPE on a 3 x 3 x 2 space (18 networks, 12 within the budget), the objective
    favouring one corner: a converging TPE proposes it again and again."""
    from space.sampler import Budget

    choices = {"a": ("x", "y", "z"), "b": ("x", "y", "z"), "c": ("p", "q")}

    def propose(trial: object) -> tuple[str, ...]:
        return tuple(trial.suggest_categorical(k, v) for k, v in choices.items())  # type: ignore[attr-defined]

    budget = Budget("size", lambda arch: 2.0 if arch[2] == "q" and arch[0] != "x" else 1.0,
                    1.5)
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True)
    sampler = BudgetAwareSampler(tpe, propose, [budget], max_draws=100,  # type: ignore[arg-type]
                                 dedupe=dedupe)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    tried: list[tuple[str, ...]] = []

    def objective(trial: optuna.Trial) -> float:
        arch = propose(trial)
        tried.append(arch)
        return float(("x", "y", "z").index(arch[0]) + ("x", "y", "z").index(arch[1]))

    study.optimize(objective, n_trials=n_trials)
    return tried, sampler


def test_tried_parameters_are_redrawn_until_the_space_runs_out() -> None:
    tried, sampler = _tiny_search(dedupe=True, n_trials=12)
    assert len(set(tried)) == 12  # every network within the budget, each once
    assert sampler.repeats > 0
    # Past the 12 that fit, repeats are served rather than nothing.
    more, _ = _tiny_search(dedupe=True, n_trials=14)
    assert len(more) == 14 and len(set(more)) == 12
    # The release before: TPE settles on the best corner and repeats it.
    plain, sampler = _tiny_search(dedupe=False, n_trials=12)
    assert len(set(plain)) < 12 and sampler.repeats == 0
