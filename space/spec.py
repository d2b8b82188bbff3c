"""Study files: the search space, the budget, the sampler and pruner, as a `StudySpec`.

A study file is TOML with the sections ``[study]``, ``[arch]``, ``[train]``,
``[final]``, ``[sampler]`` and ``[pruner]``; see ``space/studies/resnet-budget.toml``
for every key with a comment. `load_spec` reads one by built-in name or path and
refuses anything it cannot use with a `SpecError` naming the file, key and problem.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from models import ArchConfig, ConfigError, StageConfig, count_flops, count_params
from models.config import INPUT_SIZE, conv_out_size
from models.validate import field_types
from space.dims import Dim, SpecError, Suggester, parse_dim
from space.options import PRUNER_OPTIONS, SAMPLER_OPTIONS, Option, read_options
from trainers.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_BUDGET = 5_000_000  # parameters
MAX_STAGES = 6  # 32 -> 1 pixel after five stride-2 stages
STAGE_KEYS: dict[str, Any] = {"blocks": int, "width": int, "kernel": int}
# ArchConfig fields the file may set for the whole network; pool_kernel comes from pool_grid.
GLOBAL_ARCH_KEYS: dict[str, Any] = {
    k: tp for k, tp in field_types(ArchConfig).items() if k not in ("stages", "pool_kernel")
}
ARCH_KEYS: dict[str, Any] = {"stages": int, **STAGE_KEYS, **GLOBAL_ARCH_KEYS, "pool_grid": int}
TRAIN_KEYS: dict[str, Any] = field_types(TrainConfig)
SECTIONS = ("study", "arch", "train", "final", "sampler", "pruner")
INT64 = range(-(2**63), 2**63)  # what TOML integers may be
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class OverBudget(optuna.TrialPruned):
    """A proposal over the parameter budget: pruned before any training."""

    def __init__(self, n_params: int, budget: int) -> None:
        self.n_params = n_params
        self.budget = budget
        super().__init__(f"{n_params:,} parameters > budget {budget:,}")


@dataclass(frozen=True)
class Candidate:
    """What a trial trains: an architecture, a recipe, and the architecture's size."""

    arch: ArchConfig
    train: TrainConfig
    n_params: int

    @property
    def flops(self) -> int:
        return count_flops(self.arch)


@dataclass(frozen=True)
class StudySpec:
    """A parsed, validated study file."""

    name: str
    source: str  # the file it came from
    budget: int  # parameters, inclusive
    description: str
    arch: dict[str, Dim]
    train: dict[str, Dim]
    final: dict[str, Any]  # TrainConfig overrides for `search promote`
    sampler: dict[str, Any]  # "type" and options, see space.options
    pruner: dict[str, Any]
    n_trials: int = 100  # default length of `search run`, in finished trials
    max_stages: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_stages", max(self.arch["stages"].values()))

    # -- sampling -------------------------------------------------------------

    def sample_arch(self, trial: Suggester) -> ArchConfig:
        """Draw an architecture; parameters are named ``stages``, ``stage2_width``, ..."""
        a = self.arch
        n_stages = a["stages"].suggest(trial, "stages")
        stages = tuple(
            StageConfig(
                blocks=a["blocks"].suggest(trial, f"stage{i}_blocks"),
                width=a["width"].suggest(trial, f"stage{i}_width"),
                kernel=a["kernel"].suggest(trial, f"stage{i}_kernel"),
                stride=1 if i == 1 else 2,
            )
            for i in range(1, n_stages + 1)
        )
        kwargs: dict[str, Any] = {}
        for key in GLOBAL_ARCH_KEYS:
            if key == "expansion" and kwargs["block_type"] != "bottleneck":
                continue  # meaningless for basic blocks: keep it out of the trial
            kwargs[key] = a[key].suggest(trial, key)
        grid = a["pool_grid"].suggest(trial, "pool_grid")
        final = final_size(n_stages)
        return ArchConfig(stages=stages, pool_kernel=None if grid == 1 else final // grid, **kwargs)

    def sample_train(self, trial: Suggester) -> TrainConfig:
        """Draw a recipe for a search trial."""
        return TrainConfig(**{key: dim.suggest(trial, key) for key, dim in self.train.items()})

    def sample(self, trial: Any) -> Candidate:
        """Draw a candidate for ``trial`` (an `optuna.Trial` or `FixedTrial`).

        Records ``n_params`` as a user attribute first.

        Raises:
            OverBudget: the architecture has more parameters than the budget; the
                trial also gets a ``rejected_reason`` attribute, and no recipe is drawn.
        """
        arch = self.sample_arch(trial)
        n_params = count_params(arch)
        trial.set_user_attr("n_params", n_params)
        if n_params > self.budget:
            err = OverBudget(n_params, self.budget)
            trial.set_user_attr("rejected_reason", str(err))
            raise err
        return Candidate(arch, self.sample_train(trial), n_params)

    def final_train(self, train: TrainConfig) -> TrainConfig:
        """The full-training recipe for a trial's recipe (`search promote`)."""
        return dataclasses.replace(train, **self.final)

    def arch_params(self, arch: ArchConfig) -> dict[str, Any]:
        """Trial parameters that make `sample_arch` return ``arch``.

        Raises:
            ValueError: ``arch`` lies outside this space; the message says where.
        """
        params: dict[str, Any] = {}

        def put(key: str, name: str, value: Any) -> None:
            dim = self.arch[key]
            if not dim.contains(value):
                raise ValueError(f"{name}={value!r} is outside arch.{key} {dim.describe()}")
            if not dim.fixed:
                params[name] = value

        put("stages", "stages", len(arch.stages))
        for i, stage in enumerate(arch.stages, start=1):
            if stage.stride != (1 if i == 1 else 2):
                raise ValueError(f"stage {i} has stride {stage.stride}; the space uses "
                                 "stride 1 in stage 1 and 2 after")
            for key in STAGE_KEYS:
                put(key, f"stage{i}_{key}", getattr(stage, key))
        for key in GLOBAL_ARCH_KEYS:
            if key != "expansion" or arch.block_type == "bottleneck":
                put(key, key, getattr(arch, key))
        final = final_size(len(arch.stages))
        if arch.pool_kernel is not None and final % arch.pool_kernel:
            raise ValueError(f"pool_kernel {arch.pool_kernel} does not tile the "
                             f"{final}x{final} final feature map")
        put("pool_grid", "pool_grid", 1 if arch.pool_kernel is None else final // arch.pool_kernel)
        return params

    # -- description ----------------------------------------------------------

    def dims(self) -> list[tuple[str, Dim, str]]:
        """(section.key, dim, condition) rows for display."""
        rows = [(f"arch.{k}", d, "") for k, d in self.arch.items()]
        rows = [
            (key, d, "per stage" if key[5:] in STAGE_KEYS else
             "if block_type = bottleneck" if key == "arch.expansion" else "")
            for key, d, _ in rows
        ]
        rows += [(f"train.{k}", d, "") for k, d in self.train.items()]
        return rows


def final_size(n_stages: int) -> int:
    """Side of the last feature map when stages after the first halve the size."""
    size = INPUT_SIZE
    for _ in range(n_stages - 1):
        size = conv_out_size(size, 2)
    return size


# -- loading ----------------------------------------------------------------------


def builtin_studies() -> list[str]:
    """Names of the study files shipped in ``space/studies``."""
    files = resources.files("space").joinpath("studies").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_spec(name_or_path: str | Path) -> StudySpec:
    """Read and validate a study file by built-in name (``resnet-budget``) or path.

    Raises:
        SpecError: no such study, unreadable or invalid file; the message names the
            file, the key and the problem.
    """
    text_name = str(name_or_path)
    path = Path(name_or_path)
    if path.is_file():
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"{where}: cannot read: {err}") from None
        default_name = path.stem
    elif text_name in builtin_studies():
        resource = resources.files("space").joinpath("studies").joinpath(f"{text_name}.toml")
        where = f"built-in study {text_name!r}"
        text = resource.read_text(encoding="utf-8")
        default_name = text_name
    else:
        if path.suffix == ".toml" or path.parent != Path("."):
            raise SpecError(f"{text_name}: no such study file")
        raise SpecError(
            f"unknown study {text_name!r}: not a file, and not a built-in study "
            f"({', '.join(builtin_studies())})"
        )
    try:
        raw = tomllib.loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer of over 4,300 digits
        raise SpecError(f"{where}: not valid TOML: {err}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise SpecError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    _check_integers(where, raw, "")
    return parse_spec(raw, where=where, default_name=default_name)


def _check_integers(where: str, value: Any, key: str) -> None:
    """TOML integers are 64-bit; tomllib reads any size, which later cannot even be printed."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        raise SpecError(f"{where}: {key}: integer outside TOML's 64-bit range")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_integers(where, v, f"{key}.{k}" if key else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_integers(where, v, f"{key}[{i}]")


def parse_spec(raw: dict[str, Any], *, where: str, default_name: str) -> StudySpec:
    """Validate parsed TOML; see `load_spec`."""
    for section in raw:
        if section not in SECTIONS:
            raise SpecError(f"{where}: {section}: unknown section (known: {', '.join(SECTIONS)})")
    tables = {}
    for section in SECTIONS:
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SpecError(f"{where}: {section}: must be a table ([{section}])")
        tables[section] = table

    study = read_options(where, "study", tables["study"], STUDY_OPTIONS)
    name = study.get("name", default_name)
    if not NAME_RE.fullmatch(name):
        raise SpecError(f"{where}: study.name: must be letters, digits, '.', '_' or '-', "
                        f"got {name!r}")

    arch = _parse_arch(where, tables["arch"])
    train = _parse_train(where, tables["train"])
    final = _parse_final(where, tables["final"], train)
    sampler = read_options(where, "sampler", tables["sampler"], SAMPLER_OPTIONS)
    pruner = read_options(where, "pruner", tables["pruner"], PRUNER_OPTIONS)
    spec = StudySpec(
        name=name, source=where, budget=study.get("budget", DEFAULT_BUDGET),
        description=study.get("description", ""), arch=arch, train=train, final=final,
        sampler=sampler, pruner=pruner, n_trials=study.get("n_trials", 100),
    )
    _check_sampler(where, sampler)
    _check_pruner(where, pruner)
    # Building them validates the options against each other.
    from space.sampler import make_pruner, make_sampler

    for section, make in (("sampler", make_sampler), ("pruner", make_pruner)):
        try:
            make(spec)
        except ValueError as err:
            raise SpecError(f"{where}: {section}: {err}") from None
    return spec


def _check_sampler(where: str, sampler: dict[str, Any]) -> None:
    if sampler.get("group") and not sampler.get("multivariate", True):
        raise SpecError(f"{where}: sampler.group: needs multivariate = true")


def _check_pruner(where: str, pruner: dict[str, Any]) -> None:
    """Rules Optuna only enforces (or silently breaks on) once trials are pruned."""
    low, high = pruner.get("min_resource"), pruner.get("max_resource", "auto")
    if pruner["type"] == "hyperband" and low == "auto":
        raise SpecError(f"{where}: pruner.min_resource: hyperband needs a whole number of "
                        "epochs, got 'auto'")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        raise SpecError(f"{where}: pruner.min_resource: {low} exceeds max_resource {high}")


STUDY_OPTIONS: dict[str, Option] = {
    "name": Option(str),
    "description": Option(str),
    "budget": Option(int, lambda v: v > 0, "must be > 0"),
    "n_trials": Option(int, lambda v: v > 0, "must be > 0"),
}


def _config_check(make: Any, key: str) -> Any:
    """A check that builds a config with ``key`` set, so the dataclass rules apply."""

    def check(value: Any) -> None:
        try:
            make(**{key: value})
        except ConfigError as err:
            raise ConfigError(key, value, err.problem) from None

    return check


def _train_check(key: str) -> Any:
    # A long run, so that warmup_epochs is judged against the epochs, not the default.
    return _config_check(lambda **kw: TrainConfig(**{"epochs": 10**6, **kw}), key)


def _arch_check(key: str) -> Any:
    if key == "stages":
        def check(value: int) -> None:
            if not 1 <= value <= MAX_STAGES:
                raise ConfigError(key, value, f"must be in 1..{MAX_STAGES}")
        return check
    if key == "pool_grid":
        def check(value: int) -> None:
            if value < 1 or value & (value - 1):
                raise ConfigError(key, value, "must be a power of two (1 = global pooling)")
        return check
    if key in STAGE_KEYS:
        return _config_check(lambda **kw: StageConfig(**{"blocks": 1, "width": 64, **kw}), key)
    return _config_check(lambda **kw: ArchConfig(stages=(StageConfig(1, 64),), **kw), key)


def _parse_arch(where: str, table: dict[str, Any]) -> dict[str, Dim]:
    for key in table:
        if key not in ARCH_KEYS:
            raise SpecError(f"{where}: arch.{key}: unknown key (known: {', '.join(ARCH_KEYS)})")
    for key in ("stages", "blocks", "width"):
        if key not in table:
            raise SpecError(f"{where}: arch.{key}: required key is missing")
    defaults = {f.name: f.default for f in dataclasses.fields(ArchConfig)}
    defaults.update(kernel=3, pool_grid=1)
    dims = {
        key: parse_dim(where, f"arch.{key}", table.get(key, defaults.get(key)), tp,
                       _arch_check(key))
        for key, tp in ARCH_KEYS.items()
    }
    if dims["stages"].kind == "float":  # pragma: no cover - int type is enforced
        raise SpecError(f"{where}: arch.stages: must be whole numbers")
    smallest = final_size(max(dims["stages"].values()))
    too_big = [g for g in dims["pool_grid"].extremes() if g > smallest]
    if too_big:
        raise SpecError(
            f"{where}: arch.pool_grid: {too_big[0]} is larger than the {smallest}x{smallest} "
            f"final feature map of a {max(dims['stages'].values())}-stage network")
    if "bottleneck" in dims["block_type"].extremes():
        for width in dims["width"].values():
            for expansion in dims["expansion"].values():
                if width % expansion:
                    raise SpecError(
                        f"{where}: arch.width: {width} is not a multiple of expansion "
                        f"{expansion}, which bottleneck blocks need")
    return dims


def _parse_train(where: str, table: dict[str, Any]) -> dict[str, Dim]:
    for key in table:
        if key not in TRAIN_KEYS:
            raise SpecError(f"{where}: train.{key}: unknown key (known: {', '.join(TRAIN_KEYS)})")
    dims = {
        key: parse_dim(where, f"train.{key}", value, TRAIN_KEYS[key], _train_check(key))
        for key, value in table.items()
    }
    epochs = dims.get("epochs")
    warmup = dims.get("warmup_epochs")
    min_epochs = min(epochs.extremes()) if epochs else TrainConfig.epochs
    max_warmup = max(warmup.extremes()) if warmup else TrainConfig.warmup_epochs
    if max_warmup > min_epochs:
        raise SpecError(f"{where}: train.warmup_epochs: {max_warmup} exceeds the shortest "
                        f"run of {min_epochs} epochs")
    return dims


def _parse_final(where: str, table: dict[str, Any], train: dict[str, Dim]) -> dict[str, Any]:
    final: dict[str, Any] = {"epochs": 200, "train_subset": 0}
    for key, value in table.items():
        if key not in TRAIN_KEYS:
            raise SpecError(f"{where}: final.{key}: unknown key (known: {', '.join(TRAIN_KEYS)})")
        dim = parse_dim(where, f"final.{key}", value, TRAIN_KEYS[key], _train_check(key))
        if not dim.fixed:
            raise SpecError(f"{where}: final.{key}: must be a single value, not a choice or range")
        final[key] = dim.value
    # Each value a trial may draw must still make a valid recipe under the overrides.
    base = {k: d.extremes()[0] for k, d in train.items() if k not in final}
    for key, dim in train.items():
        if key in final:
            continue
        for value in dim.extremes():
            try:
                TrainConfig(**{**base, key: value, **final})
            except ConfigError as err:
                section = "final" if err.field in final else "train"
                raise SpecError(f"{where}: {section}.{err.field}: {err.problem}, got "
                                f"{err.value!r} (with train.{key} = {value!r} and the [final] "
                                "overrides)") from None
    return final
