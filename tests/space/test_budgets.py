"""Budgets beyond parameters: FLOPs, measured latency (cached in the store) and memory;
which budget a rejected proposal broke, and Optuna constraints on every trial."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import optuna
import pytest

from models import count_flops, count_params
from search.run import RunOptions, run_search
from space import Budget, OverBudget, SpecError, load_spec, make_sampler
from space.budgets import Limits, Meter, make_budgets
from tests.conftest import SHARED_ARCHIVE, RandomSuggester
from tests.search import trainers
from tests.search.test_service import smoke_file


def smoke_with(tmp_path: Path, lines: str, budget_aware: bool = True) -> Path:
    changes = {"budget = 40_000 ": f"budget = 40_000\n{lines}\n"}
    if not budget_aware:
        changes["[sampler]"] = "[sampler]\nbudget_aware = false"
    return smoke_file(tmp_path, **changes)


def test_new_budget_keys_parse_and_count_in_the_fingerprint(tmp_path: Path) -> None:
    plain = load_spec(smoke_file(tmp_path))
    flops = load_spec(smoke_with(tmp_path, "flops_budget = 20_000_000"))
    assert flops.flops_budget == 20_000_000 and plain.flops_budget is None
    assert flops.fingerprint() != plain.fingerprint()
    assert "20,000,000 FLOPs" in flops.limits.describe()
    for line, field in (("flops_budget = 0", "flops_budget"),
                        ("latency_batch = 0", "latency_batch"),
                        ("memory_budget_mb = -1.0", "memory_budget_mb")):
        with pytest.raises(SpecError, match=field):
            load_spec(smoke_with(tmp_path, line))


def test_a_proposal_over_the_flops_budget_is_rejected_naming_it(tmp_path: Path) -> None:
    spec = load_spec(smoke_with(tmp_path, "flops_budget = 11_000_000"))
    rejected = kept = 0
    for seed in range(60):
        arch = spec.sample_arch(RandomSuggester(seed))
        try:
            candidate = spec.sample(RandomSuggester(seed))
        except OverBudget as err:
            rejected += 1
            over_params = count_params(arch) > 40_000
            assert err.name == ("parameters" if over_params else "flops"), err
            if not over_params:
                assert err.cost == count_flops(arch) > 11_000_000 and "FLOPs" in str(err)
            continue
        kept += 1
        assert candidate.costs == {"parameters": count_params(arch), "flops": count_flops(arch)}
        assert count_flops(arch) <= 11_000_000
    assert rejected > 5 and kept > 5


def test_the_budget_aware_sampler_never_serves_a_proposal_over_any_budget(
        tmp_path: Path) -> None:
    spec = load_spec(smoke_file(tmp_path))

    def latency(arch: object) -> float:  # a stand-in that does not depend on the machine
        return count_flops(arch) / 4e6 + (2.0 if "bottleneck" in str(arch) else 0.0)  # type: ignore[arg-type]

    for params, flops, slow in itertools.product((20_000, 40_000), (None, 8_000_000),
                                                 (None, 2.0)):
        budgets = make_budgets(Limits(params, flops))[0]
        if slow is not None:
            budgets.append(Budget("latency_ms", latency, slow))
        sampler = make_sampler(spec, seed=1, budgets=budgets)
        study = optuna.create_study(direction="maximize", sampler=sampler)

        def objective(trial: optuna.Trial, budgets: list[Budget] = budgets) -> float:
            candidate = spec.sample(trial, budgets)  # raises OverBudget if one slipped through
            return float(candidate.n_params)

        study.optimize(objective, n_trials=25)
        assert sampler.exhausted == 0, (params, flops, slow)  # type: ignore[attr-defined]
        served = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(served) == 25, (params, flops, slow, [t.state for t in study.trials])


def test_latency_is_measured_once_per_architecture_and_kept_in_the_store(
        tmp_path: Path) -> None:
    spec = load_spec(smoke_file(tmp_path))
    storage = f"sqlite:///{tmp_path / 'latency.db'}"
    calls: list[str] = []

    def fake_latency(arch: object) -> float:
        calls.append(str(arch))
        return 1.5

    study = optuna.create_study(study_name="lat", storage=storage)
    arch = spec.sample_arch(RandomSuggester(3))
    first = Meter("latency_ms", fake_latency, "cpu:b4")
    first.bind(study)
    assert first(arch) == 1.5 and first(arch) == 1.5 and first.measured == 1
    # Another worker (another process, another Meter) on the same store: no measurement.
    second = Meter("latency_ms", fake_latency, "cpu:b4")
    second.bind(optuna.load_study(study_name="lat", storage=storage))
    assert second(arch) == 1.5 and second.measured == 0 and len(calls) == 1
    # Another device or batch is another figure.
    third = Meter("latency_ms", fake_latency, "cpu:b8")
    third.bind(study)
    assert third(arch) == 1.5 and third.measured == 1
    # The real measurement: a positive number of milliseconds.
    budgets, meters = make_budgets(Limits(40_000, latency_ms=1000.0, latency_batch=2), "cpu")
    assert [b.name for b in budgets] == ["parameters", "latency_ms"]
    assert 0 < budgets[1].cost(arch) < 1000 and meters[0].measured == 1


def test_the_memory_budget_is_measured_at_the_recipes_batch_size(tmp_path: Path) -> None:
    memory = "memory_budget_mb = 4000.0"
    fixed = load_spec(smoke_with(tmp_path, memory))  # smoke: batch_size = 256
    assert fixed.memory_images == 256 and fixed.limits.memory_batch == 256
    assert "(batch 256)" in fixed.limits.describe()
    ranged = load_spec(smoke_file(tmp_path, **{"budget = 40_000 ": f"budget = 40_000\n{memory}\n",
                                               "batch_size = 256": "batch_size = [64, 384]"}))
    assert ranged.memory_images == 384  # the largest a trial may draw
    unset = load_spec(smoke_file(tmp_path, **{"budget = 40_000 ": f"budget = 40_000\n{memory}\n",
                                              "batch_size = 256\n": ""}))
    assert "batch_size" not in unset.train and unset.memory_images == 512  # TrainConfig's
    told = load_spec(smoke_with(tmp_path, f"{memory}\nmemory_batch = 32"))
    assert told.memory_images == 32
    assert len({s.fingerprint() for s in (fixed, ranged, told)}) == 3
    # Where the recipe's batch is not 512, the fingerprint the release of 2026-12-03 gave
    # the same file differs (`search.run.check_space` lets such a study resume).
    assert fixed.fingerprint(legacy_memory_batch=True) != fixed.fingerprint()
    assert fixed.fingerprint(legacy_memory_batch=True) == load_spec(
        smoke_with(tmp_path, f"{memory}\nmemory_batch = 512")).fingerprint()
    assert unset.fingerprint(legacy_memory_batch=True) == unset.fingerprint()


def test_memory_budgets_need_cuda_and_say_so() -> None:
    with pytest.raises(ValueError, match="measured on CUDA"):
        make_budgets(Limits(40_000, memory_mb=100.0), "cpu")
    with pytest.raises(ValueError, match="worker's device"):
        make_budgets(Limits(40_000, latency_ms=1.0))


@pytest.mark.usefixtures("shared_archive")
def test_rejected_trials_record_the_budget_they_broke_and_every_trial_its_constraints(
        tmp_path: Path) -> None:
    study = smoke_with(tmp_path, "flops_budget = 6_000_000", budget_aware=False)
    url = f"sqlite:///{tmp_path / 'flops.db'}"
    code = run_search(RunOptions(study=str(study), storage=url, study_name="flops", n_trials=12,
                                 workers=1, executor="local", data=str(SHARED_ARCHIVE),
                                 device="cpu", seed=0, baselines=False,
                                 trainer=trainers.instant), io.StringIO())
    assert code == 0
    trials = optuna.load_study(study_name="flops", storage=url).trials
    broke = {t.user_attrs.get("rejected_budget") for t in trials} - {None}
    assert "flops" in broke
    for t in trials:
        costs = t.user_attrs.get("costs", {})
        assert costs, t.user_attrs
        assert set(t.constraints) == set(costs)  # type: ignore[attr-defined]
        feasible = all(v <= 0 for v in t.constraints.values())  # type: ignore[attr-defined]
        assert feasible == ("rejected_budget" not in t.user_attrs), t.user_attrs
        if t.user_attrs.get("rejected_budget") == "flops":
            assert costs["flops"] > 6_000_000 and t.constraints["flops"] > 0  # type: ignore[attr-defined]


class Stubborn(optuna.samplers.BaseSampler):
    """Always the largest value: a model-based sampler settled where nothing fits."""

    def infer_relative_search_space(self, study: object, trial: object) -> dict:
        return {}

    def sample_relative(self, study: object, trial: object, space: object) -> dict:
        return {}

    def sample_independent(self, study: object, trial: object, name: str,
                           dist: optuna.distributions.BaseDistribution) -> object:
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[-1]
        return dist.high  # type: ignore[attr-defined]


def test_a_base_sampler_stuck_over_the_budget_falls_back_to_random_proposals(
        tmp_path: Path) -> None:
    from space.sampler import BudgetAwareSampler

    spec = load_spec(smoke_file(tmp_path))
    budgets = make_budgets(Limits(20_000, 8_000_000))[0]
    sampler = BudgetAwareSampler(Stubborn(), spec.sample_arch, budgets, max_draws=50)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: float(spec.sample(t, budgets).n_params), n_trials=10)
    assert sampler.fallbacks == 10 and sampler.exhausted == 0
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
