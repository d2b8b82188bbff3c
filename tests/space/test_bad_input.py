"""`space.load_spec` on study files that cannot be used.

Every case starts from `MINIMAL` (which must load) and changes one line, so a
`SpecError` can only come from that change. A good error names the file, the
dotted key and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from space import SpecError, StudySpec, builtin_studies, load_spec, make_pruner, make_sampler
from tests.conftest import MINIMAL_STUDY

MINIMAL = MINIMAL_STUDY


def variant(old: str, new: str) -> str:
    """`MINIMAL` with the one line ``old`` replaced by ``new`` (which may span lines)."""
    lines = MINIMAL.splitlines()
    assert lines.count(old) == 1, f"{old!r} is not exactly one line of MINIMAL"
    return "\n".join(new if line == old else line for line in lines) + "\n"


def add(section: str, line: str) -> str:
    """`MINIMAL` with ``line`` added at the top of ``[section]``."""
    return variant(f"[{section}]", f"[{section}]\n{line}")


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


# -- the baseline the bad cases start from ------------------------------------------


def test_minimal_study_loads(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.name == "mini"
    assert spec.budget == 100_000
    assert spec.arch["width"].choices == (16, 32)
    assert spec.max_stages == 3
    assert spec.pruner["type"] == "hyperband"


def test_variant_helper_refuses_a_line_not_in_minimal() -> None:
    with pytest.raises(AssertionError):
        variant("width = [8]", "width = [16]")


@pytest.mark.parametrize("name", builtin_studies())
def test_builtin_study_loads(name: str) -> None:
    assert load_spec(name).name == name


# -- one bad line each -----------------------------------------------------------------

CASES = [
    # unknown keys and sections
    pytest.param(add("arch", "depth = 3"), "arch.depth", "unknown key", id="unknown-arch-key"),
    pytest.param(add("train", "learning_rate = 0.1"), "train.learning_rate", "unknown key",
                 id="unknown-train-key"),
    pytest.param(add("final", "epoch = 100"), "final.epoch", "unknown key",
                 id="unknown-final-key"),
    pytest.param(add("sampler", "n_trials = 50"), "sampler.n_trials", "unknown key",
                 id="unknown-sampler-key"),
    pytest.param(add("pruner", "patience = 3"), "pruner.patience", "unknown key",
                 id="unknown-pruner-key"),
    pytest.param(add("study", 'owner = "me"'), "study.owner", "unknown key",
                 id="unknown-study-key"),
    pytest.param(MINIMAL + "\n[model]\ndepth = 3\n", "model", "unknown section",
                 id="unknown-section"),
    pytest.param(variant("[final]", "[[final]]"), "final", "must be a table",
                 id="section-not-a-table"),
    # wrong types
    pytest.param(variant("width = [16, 32]", 'width = "wide"'), "arch.width", "must be int",
                 id="width-string"),
    pytest.param(variant("width = [16, 32]", "width = [16, 32.0]"), "arch.width", "must be int",
                 id="width-float-choice"),
    pytest.param(variant("budget = 100_000", 'budget = "5M"'), "study.budget", "must be int",
                 id="budget-string"),
    pytest.param(add("arch", "shortcut_pool = 1"), "arch.shortcut_pool", "must be bool",
                 id="shortcut-pool-int"),
    pytest.param(add("arch", "block_type = 1"), "arch.block_type", "must be str",
                 id="block-type-int"),
    pytest.param(variant("lr = { low = 0.01, high = 0.1, log = true }",
                         'lr = { low = "0.01", high = 0.1, log = true }'),
                 "train.lr", "low must be float", id="lr-low-string"),
    pytest.param(variant('name = "mini"', "name = 5"), "study.name", "must be str",
                 id="name-int"),
    pytest.param(variant('type = "tpe"', "type = 1"), "sampler.type", "must be str",
                 id="sampler-type-int"),
    # bool where a number is expected
    pytest.param(variant("blocks = { low = 1, high = 2 }", "blocks = true"), "arch.blocks",
                 "must be int", id="blocks-bool"),
    pytest.param(variant("budget = 100_000", "budget = true"), "study.budget", "must be int",
                 id="budget-bool"),
    pytest.param(variant("epochs = 2", "epochs = true"), "train.epochs", "must be int",
                 id="epochs-bool"),
    pytest.param(variant("stages = { low = 2, high = 3 }", "stages = { low = true, high = 3 }"),
                 "arch.stages", "low must be int", id="range-low-bool"),
    pytest.param(add("arch", "se_ratio = false"), "arch.se_ratio", "must be float",
                 id="se-ratio-bool"),
    # choices
    pytest.param(variant("width = [16, 32]", "width = []"), "arch.width", "empty list",
                 id="empty-choices"),
    pytest.param(variant("width = [16, 32]", "width = [16, 16]"), "arch.width", "repeated choice",
                 id="repeated-choice"),
    # ranges
    pytest.param(variant("blocks = { low = 1, high = 2 }", "blocks = { low = 3, high = 1 }"),
                 "arch.blocks", "empty range", id="empty-range"),
    pytest.param(variant("blocks = { low = 1, high = 2 }",
                         "blocks = { low = 1, high = 2, stride = 1 }"),
                 "arch.blocks", "unknown range key", id="range-unknown-key"),
    pytest.param(variant("blocks = { low = 1, high = 2 }", "blocks = { low = 1 }"),
                 "arch.blocks", "needs both", id="range-without-high"),
    pytest.param(add("arch", 'block_type = { low = 1, high = 2 }'), "arch.block_type",
                 "numeric", id="range-of-strings"),
    pytest.param(add("train", "weight_decay = { low = 0.0, high = 1e-3, log = true }"),
                 "train.weight_decay", "low > 0", id="log-range-low-zero"),
    pytest.param(add("train", "cutout = { low = 0, high = 8, log = true }"),
                 "train.cutout", "low > 0", id="log-int-range-low-zero"),
    pytest.param(variant("lr = { low = 0.01, high = 0.1, log = true }",
                         "lr = { low = 0.01, high = 0.1, step = 0.01, log = true }"),
                 "train.lr", "both 'step' and 'log'", id="step-and-log"),
    pytest.param(variant("blocks = { low = 1, high = 2 }",
                         "blocks = { low = 1, high = 4, step = 0 }"),
                 "arch.blocks", "step must be > 0", id="step-zero"),
    pytest.param(variant("blocks = { low = 1, high = 2 }",
                         "blocks = { low = 1, high = 4, step = 1.5 }"),
                 "arch.blocks", "step must be int", id="step-float-on-int"),
    pytest.param(variant("lr = { low = 0.01, high = 0.1, log = true }",
                         'lr = { low = 0.01, high = 0.1, log = "yes" }'),
                 "train.lr", "log must be true or false", id="log-not-bool"),
    # budget
    pytest.param(variant("budget = 100_000", "budget = 0"), "study.budget", "must be > 0",
                 id="budget-zero"),
    pytest.param(variant("budget = 100_000", "budget = -5"), "study.budget", "must be > 0",
                 id="budget-negative"),
    pytest.param(variant('name = "mini"', 'name = "my study"'), "study.name",
                 "must be letters", id="name-with-space"),
    # stages
    pytest.param(variant("stages = { low = 2, high = 3 }", "stages = 0"), "arch.stages",
                 "must be in 1..6", id="stages-zero"),
    pytest.param(variant("stages = { low = 2, high = 3 }", "stages = { low = 1, high = 7 }"),
                 "arch.stages", "high must be in 1..6", id="stages-range-high-7"),
    pytest.param(variant("stages = { low = 2, high = 3 }", "stages = [2, 7]"), "arch.stages",
                 "must be in 1..6", id="stages-choice-7"),
    # required arch keys
    pytest.param(variant("stages = { low = 2, high = 3 }", ""), "arch.stages",
                 "required key is missing", id="missing-stages"),
    pytest.param(variant("blocks = { low = 1, high = 2 }", ""), "arch.blocks",
                 "required key is missing", id="missing-blocks"),
    pytest.param(variant("width = [16, 32]", ""), "arch.width", "required key is missing",
                 id="missing-width"),
    # arch values a network cannot have
    pytest.param(add("arch", "kernel = 4"), "arch.kernel", "must be one of", id="kernel-even"),
    pytest.param(add("arch", "kernel = [3, 4]"), "arch.kernel", "must be one of",
                 id="kernel-even-choice"),
    pytest.param(add("arch", "stem_kernel = 2"), "arch.stem_kernel", "must be one of",
                 id="stem-kernel-even"),
    pytest.param(add("arch", "shortcut_kernel = [1, 6]"), "arch.shortcut_kernel",
                 "must be one of", id="shortcut-kernel-even"),
    pytest.param(variant("width = [16, 32]", "width = [16, 5000]"), "arch.width",
                 "must be in 1..4096", id="width-too-large"),
    pytest.param(variant("blocks = { low = 1, high = 2 }", "blocks = { low = 0, high = 2 }"),
                 "arch.blocks", "must be >= 1", id="blocks-zero"),
    pytest.param(add("arch", 'pool = "min"'), "arch.pool", "must be one of", id="pool-unknown"),
    pytest.param(add("arch", "dropout = 1.0"), "arch.dropout", "must be in [0, 1)",
                 id="dropout-one"),
    pytest.param(add("arch", "pool_grid = 16"), "arch.pool_grid", "larger than",
                 id="pool-grid-larger-than-final-map"),
    pytest.param(variant("stages = { low = 2, high = 3 }",
                         "stages = { low = 2, high = 4 }\npool_grid = [1, 8]"),
                 "arch.pool_grid", "larger than", id="pool-grid-too-large-for-deepest"),
    pytest.param(add("arch", "pool_grid = 3"), "arch.pool_grid", "power of two",
                 id="pool-grid-not-power-of-two"),
    pytest.param(add("arch", "pool_grid = 0"), "arch.pool_grid", "power of two",
                 id="pool-grid-zero"),
    pytest.param(variant("width = [16, 32]", 'width = [16, 30]\nblock_type = "bottleneck"'),
                 "arch.width", "must be a multiple of expansion", id="bottleneck-width"),
    pytest.param(variant("width = [16, 32]",
                         'width = [16, 32]\nblock_type = ["basic", "bottleneck"]\nexpansion = 3'),
                 "arch.width", "must be a multiple of expansion", id="bottleneck-expansion"),
    pytest.param(add("arch", "expansion = 0"), "arch.expansion", "must be >= 1",
                 id="expansion-zero"),
    # train and final
    pytest.param(add("train", "warmup_epochs = 3.0"), "train.warmup_epochs", "exceeds",
                 id="warmup-over-epochs"),
    pytest.param(variant("epochs = 2", "epochs = [2, 5]\nwarmup_epochs = [0.0, 3.0]"),
                 "train.warmup_epochs", "exceeds", id="warmup-over-shortest-epochs"),
    pytest.param(add("train", 'optimizer = "adam"'), "train.optimizer", "must be one of",
                 id="optimizer-unknown"),
    pytest.param(variant("lr = { low = 0.01, high = 0.1, log = true }",
                         "lr = { low = 0.01, high = 20.0, log = true }"),
                 "train.lr", "high must be in (0, 10]", id="lr-high-out-of-range"),
    pytest.param(variant("epochs = 4", "epochs = [100, 200]"), "final.epochs",
                 "single value", id="final-choice"),
    pytest.param(variant("epochs = 4", "epochs = { low = 100, high = 200 }"), "final.epochs",
                 "single value", id="final-range"),
    pytest.param(variant("epochs = 4", "epochs = 0"), "final.epochs", "must be >= 1",
                 id="final-epochs-zero"),
    pytest.param(add("final", "warmup_epochs = 5.0"), "final.warmup_epochs",
                 "must be in 0..epochs", id="final-warmup-over-epochs"),
    # sampler and pruner
    pytest.param(variant('type = "tpe"', 'type = "cmaes"'), "sampler.type", "must be one of",
                 id="sampler-type-unknown"),
    pytest.param(variant('type = "tpe"', 'type = "random"\nn_startup_trials = 5'),
                 "sampler.n_startup_trials", "does not apply", id="tpe-option-on-random"),
    pytest.param(add("sampler", "max_draws = 0"), "sampler.max_draws", "must be >= 1",
                 id="max-draws-zero"),
    pytest.param(add("sampler", "seed = -1"), "sampler.seed", "must be >= 0",
                 id="seed-negative"),
    pytest.param(variant('type = "hyperband"', 'type = "asha"'), "pruner.type",
                 "must be one of", id="pruner-type-unknown"),
    pytest.param(add("pruner", "percentile = 50.0"), "pruner.percentile", "does not apply",
                 id="percentile-on-hyperband"),
    pytest.param(variant('type = "hyperband"', 'type = "median"\nmax_resource = 10'),
                 "pruner.max_resource", "does not apply", id="max-resource-on-median"),
    pytest.param(variant('type = "hyperband"', 'type = "percentile"\npercentile = 150.0'),
                 "pruner.percentile", "must be in 0..100", id="percentile-over-100"),
    pytest.param(add("pruner", "reduction_factor = 1"), "pruner.reduction_factor",
                 "must be >= 2", id="reduction-factor-one"),
    pytest.param(add("pruner", "min_resource = 0"), "pruner.min_resource", "must be a whole",
                 id="min-resource-zero"),
    pytest.param(add("pruner", 'min_resource = "half"'), "pruner.min_resource", '"auto"',
                 id="min-resource-word"),
]


@pytest.mark.parametrize(("text", "key", "problem"), CASES)
def test_bad_study_names_file_key_and_problem(tmp_path: Path, text: str, key: str,
                                              problem: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert f": {key}:" in message, f"{key!r} not named as the key in {message!r}"
    assert problem in message


# -- files that are not study files ------------------------------------------------------


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, variant("width = [16, 32]", "width = [16, 32"))
    message = load_error(path)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line" in message


def test_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.replace('"mini"', '"mini"  # caf\xe9').encode("latin-1"))
    message = load_error(path)
    assert str(path) in message
    assert "cannot read" in message


@pytest.mark.parametrize("name", ["missing.toml", "sub/missing", "sub/missing.toml"])
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    message = load_error(path)
    assert str(path) in message
    assert "no such study file" in message


def test_missing_relative_toml_is_named() -> None:
    message = load_error("no-such-dir-xyz/study.toml")
    assert "no-such-dir-xyz/study.toml" in message
    assert "no such study file" in message


def test_unknown_builtin_lists_builtin_names() -> None:
    message = load_error("resnet-budgett")
    assert "'resnet-budgett'" in message
    assert "unknown study" in message
    names = builtin_studies()
    assert {"resnet-budget", "smoke"} <= set(names)
    for name in names:
        assert name in message


# -- files whose keys are sound alone but not together, or only at their ends -------------


def assert_refused(path: Path, keys: tuple[str, ...]) -> None:
    """Loading fails with a message naming the file and one of ``keys``."""
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    assert any(f": {key}:" in message for key in keys), message


def assert_sampled_archs_lie_in_space(spec: StudySpec, n: int = 200) -> None:
    """Every drawn architecture is valid and maps back to the parameters it was drawn with."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        arch = spec.sample_arch(trial)
        assert spec.arch_params(arch) == trial.params
        study.tell(trial, 0.0)


@pytest.mark.parametrize("key", ["kernel", "stem_kernel", "shortcut_kernel"])
def test_kernel_range_holding_an_even_kernel_is_refused(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, add("arch", f"{key} = {{ low = 3, high = 5 }}"))
    assert_refused(path, (f"arch.{key}",))  # 4 lies inside the range


def test_pool_grid_range_holding_a_non_power_of_two_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, add("arch", "pool_grid = { low = 1, high = 4 }"))
    assert_refused(path, ("arch.pool_grid",))  # 3 lies inside the range


def test_valid_arch_ranges_sample_inside_the_space(tmp_path: Path) -> None:
    # Ranges whose every value is valid load, and draw only architectures of the space.
    text = add("arch", "kernel = [3, 5]\npool_grid = [1, 2, 4]\nstem_width = { low = 8, "
               "high = 24, step = 8 }")
    assert_sampled_archs_lie_in_space(load_spec(write(tmp_path, text)))


def test_final_is_checked_against_every_train_value(tmp_path: Path) -> None:
    text = variant("epochs = 4", "epochs = 1")
    text = text.replace("[train]\nepochs = 2", "[train]\nepochs = 2\nwarmup_epochs = [0.0, 1.5]")
    path = write(tmp_path, text)
    assert_refused(path, ("final.warmup_epochs", "final.epochs", "train.warmup_epochs"))


def test_group_without_multivariate_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, add("sampler", "multivariate = false\ngroup = true"))
    assert_refused(path, ("sampler.group",))


def test_univariate_tpe_builds_a_sampler(tmp_path: Path) -> None:
    make_sampler(load_spec(write(tmp_path, add("sampler", "multivariate = false"))))


def test_tpe_multivariate_with_group_off_builds_a_sampler(tmp_path: Path) -> None:
    path = write(tmp_path, add("sampler", "multivariate = false\ngroup = false"))
    make_sampler(load_spec(path))


def run_pruned_study(pruner: optuna.pruners.BasePruner, n_trials: int = 30) -> int:
    """Trials the pruner stops in a study whose trials report 12 steps; returns how many."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(12):
            trial.report(x, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=n_trials, catch=())
    return sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)


def test_hyperband_min_resource_auto_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, add("pruner", 'min_resource = "auto"\nmax_resource = 12'))
    assert_refused(path, ("pruner.min_resource",))


def test_hyperband_min_resource_over_max_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, add("pruner", "min_resource = 10\nmax_resource = 2"))
    assert_refused(path, ("pruner.min_resource", "pruner.max_resource"))


def test_hyperband_with_sound_resources_prunes(tmp_path: Path) -> None:
    # The study used above does let a well-configured hyperband pruner prune.
    path = write(tmp_path, add("pruner", "min_resource = 1\nmax_resource = 12"))
    assert run_pruned_study(make_pruner(load_spec(path))) > 0


# -- a study path that is not a regular file ---------------------------------------------


def test_a_directory_is_not_a_study_file(tmp_path: Path) -> None:
    folder = tmp_path / "study.toml"
    folder.mkdir()
    message = load_error(folder)
    assert message == f"{folder}: is a directory, not a study file"


def test_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    # Reading a FIFO nobody writes to would block for good: it is refused unopened.
    fifo = tmp_path / "study.toml"
    os.mkfifo(fifo)
    message = load_error(fifo)
    assert message == f"{fifo}: is not a regular file (a study file is TOML text)"
