"""Study files: the built-in ones load, sample and reject over-budget candidates."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from models import BASELINES, ArchConfig, count_params
from space import Candidate, OverBudget, SpecError, builtin_studies, load_spec
from tests.conftest import RandomSuggester
from trainers.config import TrainConfig


def test_builtin_studies_are_shipped() -> None:
    assert {"resnet-budget", "smoke"} <= set(builtin_studies())
    spec = load_spec("resnet-budget")
    assert spec.name == "resnet-budget"
    assert spec.budget == 5_000_000
    assert spec.final["epochs"] == 200


def test_a_study_file_loads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[arch]\nstages = 3\nblocks = [1, 2]\nwidth = [16, 32]\n')
    spec = load_spec(path)
    assert spec.name == "mine"  # the file's stem, when [study] names none
    assert spec.budget == 5_000_000
    assert spec.source == str(path)
    assert load_spec(str(path)).arch == spec.arch


def test_sample_gives_a_candidate_within_budget_and_writes_nothing_on_the_trial() -> None:
    spec = load_spec("resnet-budget")
    for seed in range(50):
        trial = RandomSuggester(seed)
        try:
            candidate = spec.sample(trial)
        except OverBudget as err:
            assert err.n_params == count_params(spec.sample_arch(RandomSuggester(seed))) \
                > spec.budget
            assert str(err).endswith(f"> budget {spec.budget:,}")
            assert trial.user_attrs == {}
            continue
        assert isinstance(candidate, Candidate)
        assert candidate.n_params == count_params(candidate.arch) <= spec.budget
        assert trial.user_attrs == {}  # the search's record writes what a trial holds
        assert isinstance(candidate.train, TrainConfig)
        assert candidate.train.epochs == 15


def test_per_stage_parameters_exist_only_for_existing_stages() -> None:
    spec = load_spec("resnet-budget")
    for seed in range(40):
        trial = RandomSuggester(seed)
        arch = spec.sample_arch(trial)
        names = {n for n in trial.params if n.startswith("stage") and n != "stages"}
        expected = {f"stage{i}_{k}" for i in range(1, len(arch.stages) + 1)
                    for k in ("blocks", "width", "kernel")}
        assert names == expected
        assert ("expansion" in trial.params) is False  # fixed in the file: never a parameter
        assert [s.stride for s in arch.stages] == [1] + [2] * (len(arch.stages) - 1)


def test_pool_grid_sets_the_head_window() -> None:
    spec = load_spec("resnet-budget")
    params = spec.arch_params(BASELINES["resnet-443"])
    arch = spec.sample_arch(FixedTrial({**params, "pool_grid": 2}))
    assert arch.pool_kernel == 4  # 8x8 final map pooled to 2x2
    assert arch.head_features() == 256 * 4


@pytest.mark.parametrize("name", ["resnet-443", "resnet-20", "resnet-56", "wrn-16-4",
                                  "resnet-18-3stage"])
def test_baselines_inside_the_space_round_trip_through_trial_params(name: str) -> None:
    spec = load_spec("resnet-budget")
    params = spec.arch_params(BASELINES[name])
    assert spec.sample_arch(FixedTrial(params)) == BASELINES[name]


def test_arch_params_refuses_an_architecture_outside_the_space() -> None:
    spec = load_spec("resnet-budget")
    with pytest.raises(ValueError, match=r"stage1_blocks=18 is outside arch\.blocks"):
        spec.arch_params(BASELINES["resnet-110"])
    wide_stem = ArchConfig.from_dict({**BASELINES["resnet-20"].to_dict(), "stem_width": 24})
    with pytest.raises(ValueError, match="stem_width=24"):
        spec.arch_params(wide_stem)


def test_over_budget_trial_is_pruned_in_the_store_and_never_trains(tmp_path: Path) -> None:
    spec = load_spec("resnet-budget")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="t", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    trained: list[int] = []
    rejected: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        try:
            candidate = spec.sample(trial)
        except OverBudget as err:
            rejected[trial.number] = err.n_params
            raise
        trained.append(trial.number)  # stands for training
        return candidate.n_params

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=40)
    stored = optuna.load_study(study_name="t", storage=storage).trials
    pruned = [t for t in stored if t.state == TrialState.PRUNED]
    assert pruned, "a random sampler on resnet-budget proposes over-budget nets"
    assert sorted(rejected) == [t.number for t in pruned]
    for t in pruned:
        assert rejected[t.number] > spec.budget
        assert t.number not in trained
    for t in stored:
        if t.state == TrialState.COMPLETE:
            assert t.value is not None and t.value <= spec.budget


def test_final_train_applies_the_full_recipe() -> None:
    spec = load_spec("resnet-budget")
    train = spec.sample_train(RandomSuggester(3))
    final = spec.final_train(train)
    assert (final.epochs, final.train_subset) == (200, 0)
    assert final.lr == train.lr


def test_smoke_study_is_tiny() -> None:
    spec = load_spec("smoke")
    for seed in range(30):
        trial = RandomSuggester(seed)
        try:
            candidate = spec.sample(trial)
        except OverBudget:
            continue
        assert candidate.n_params <= 40_000
        assert candidate.train.epochs in (1, 2)
        assert candidate.train.train_subset == 3000


def test_val_size_0_is_for_final_runs_only(tmp_path: Path) -> None:
    from tests.space.test_archspace import study

    path = study(tmp_path, "")
    text = path.read_text()
    path.write_text(text.replace("[train]\n", "[train]\nval_size = [0, 5000]\n", 1))
    with pytest.raises(SpecError, match=r"train\.val_size: 0 \(no validation split\) is for "
                                        r"\[final\] only"):
        load_spec(path)
    path.write_text(text.replace("[final]\n", "[final]\nval_size = 0\n", 1))
    assert load_spec(path).final_train(TrainConfig()).val_size == 0
    assert load_spec("resnet-budget").final["val_size"] == 0
