"""resnet-budget's new block families and regularisers: conditional keys, the budget,
the baselines queued first, and fingerprints that survive the new keys."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import optuna
import pytest

from models import BASELINES, count_params
from models.blocks import BLOCKS
from search.run import enqueue_baselines
from space import SpecError, load_spec
from space.dryrun import dry_run
from tests.conftest import RandomSuggester
from tests.space.test_archspace import study

optuna.logging.set_verbosity(optuna.logging.WARNING)

# `search space --study smoke` under the release before this one (commit 7d2a36a) printed
# no fingerprint, but `StudySpec.fingerprint()` there gave this for the unchanged file.
SMOKE_FINGERPRINT_BEFORE = "687e54489f83d139"


def test_resnet_budget_draws_every_registered_block_type_and_regulariser() -> None:
    spec = load_spec("resnet-budget")
    assert set(spec.arch["block_type"].values()) == set(BLOCKS)
    assert set(spec.arch["branch_drop"].values()) == {"none", "path", "shakedrop"}


def test_conditional_keys_exist_only_when_their_choice_is_drawn() -> None:
    spec = load_spec("resnet-budget")
    seen: Counter[str] = Counter()
    for seed in range(300):
        trial = RandomSuggester(seed)
        arch = spec.sample_arch(trial)
        params = trial.params
        seen[arch.block.name] += 1
        assert ("groups" in params) == (arch.block.name in ("bottleneck", "preact_bottleneck"))
        assert ("shake_backward" in params) == (arch.block.name == "shake")
        assert "shake_image" not in params  # fixed in the file: never a parameter
        assert ("branch_drop_rate" in params) == (arch.branch_drop != "none")
        if arch.branch_drop == "none":
            assert arch.branch_drop_rate == 0.0
        else:
            assert 0.05 <= arch.branch_drop_rate <= 0.5
        assert spec.arch_params(arch) == params  # the inverse map replays it
    assert set(seen) == set(BLOCKS)
    conditions = {key: condition for key, _, condition in spec.dims()}
    assert conditions["arch.branch_drop_rate"] == "if branch_drop != none"
    assert conditions["arch.groups"] == "if block_type in {bottleneck, preact_bottleneck}"


def test_a_drop_method_without_a_rate_is_refused_at_the_door(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"arch\.branch_drop_rate: a rate of 0 drops nothing"):
        load_spec(study(tmp_path, 'branch_drop = ["none", "path"]'))
    with pytest.raises(SpecError, match=r"arch\.branch_drop_rate: .*must be in \[0, 1\)"):
        load_spec(study(tmp_path, 'branch_drop = "shakedrop"\nbranch_drop_rate = 1.5'))
    with pytest.raises(SpecError,
                       match=r"arch\.branch_drop: choice 1: must be one of .*got 'dropblock'"):
        load_spec(study(tmp_path, 'branch_drop = ["none", "dropblock"]'))
    spec = load_spec(study(tmp_path, 'branch_drop = "shakedrop"\nbranch_drop_rate = 0.5'))
    assert spec.sample_arch(RandomSuggester(0)).branch_drop_rate == 0.5


def test_a_study_file_without_the_new_keys_keeps_its_fingerprint(tmp_path: Path) -> None:
    assert load_spec("smoke").fingerprint() == SMOKE_FINGERPRINT_BEFORE
    smoke = (Path(__file__).resolve().parents[2] / "space" / "studies" / "smoke.toml").read_text()
    moved = tmp_path / "smoke.toml"
    moved.write_text(smoke.replace("dropout = 0.0", 'dropout = 0.0\nbranch_drop = "none"'))
    assert load_spec(moved).fingerprint() == SMOKE_FINGERPRINT_BEFORE  # a default, said aloud
    moved.write_text(smoke.replace("dropout = 0.0", 'dropout = 0.0\nbranch_drop = "path"\n'
                                   "branch_drop_rate = 0.2"))
    assert load_spec(moved).fingerprint() != SMOKE_FINGERPRINT_BEFORE


def test_the_budget_aware_sampler_finds_new_families_under_the_budget() -> None:
    spec = load_spec("resnet-budget")
    kinds: Counter[str] = Counter()
    original = spec.arch_space.sample

    def sample(trial: object) -> object:
        arch = original(trial)  # type: ignore[arg-type]
        kinds[arch.block.name] += 1
        return arch

    object.__setattr__(spec.arch_space, "sample", sample)
    result = dry_run(spec, 40, seed=1)  # the first 16 are TPE's random start
    assert result.rejected == 0
    assert max(result.n_params) <= spec.budget
    new = {"preact", "preact_bottleneck", "pyramid", "pyramid_bottleneck", "shake"}
    assert len(new & {k for k, n in kinds.items() if n}) >= 3  # inner draws included


def test_new_baselines_inside_the_space_are_queued_and_replay_exactly(tmp_path: Path) -> None:
    spec = load_spec("resnet-budget")
    study_ = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="q",
                                 direction="maximize")
    queued = enqueue_baselines(study_, spec, io.StringIO())
    for name in ("wrn-40-2", "wrn-22-4", "shake-shake-26-2x32d", "pyramidnet-56-a48-shakedrop"):
        assert name in queued
    for name in ("pyramidnet-110-a84", "preact-resnet-164"):  # 18 blocks a stage
        assert name not in queued
    waiting = study_.get_trials(deepcopy=False)
    assert len(waiting) == len(queued)
    for name, trial in zip(queued, waiting, strict=True):
        arch = spec.sample_arch(optuna.trial.FixedTrial(trial.system_attrs["fixed_params"]))
        assert arch == BASELINES[name]
        assert count_params(arch) <= spec.budget
