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

from models.config import ArchConfig
from models.counting import count_flops, count_params
from models.validate import ConfigError, field_types
from space.archspace import LATER_KEYS, MAX_STAGES, ArchSpace, arch_keys, parse_arch
from space.budgets import Limits, make_budgets
from space.dims import Dim, SpecError, Suggester, config_check, parse_dim
from space.factory import build_pruner, build_sampler
from space.options import PRUNER_OPTIONS, SAMPLER_OPTIONS, Option, read_options
from space.sampler import Budget
from trainers.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["MAX_STAGES", "Candidate", "OverBudget", "StudySpec", "builtin_studies",
           "load_spec", "make_pruner", "make_sampler"]

DEFAULT_BUDGET = 5_000_000  # parameters
# The release of 2026-12-03 measured the memory budget at 512 images whatever the
# recipe's batch size; a study it started resumes (`search.run.check_space`).
LEGACY_MEMORY_BATCH = 512
TRAIN_KEYS: dict[str, Any] = field_types(TrainConfig)
SECTIONS = ("study", "arch", "train", "final", "sampler", "pruner")
INT64 = range(-(2**63), 2**63)  # what TOML integers may be
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class OverBudget(optuna.TrialPruned):
    """A proposal over one of the study's budgets: pruned before any training.

    ``name`` is the budget it broke (`space.budgets.BUDGET_NAMES`), ``cost`` its cost
    there, ``costs`` every cost known when it was rejected.
    """

    def __init__(self, n_params: int, budget: float, name: str = "parameters",
                 cost: float | None = None, costs: dict[str, float] | None = None) -> None:
        self.n_params, self.budget, self.name = n_params, budget, name
        self.cost = float(n_params if cost is None else cost)
        self.costs = dict(costs or {name: self.cost})
        if name == "parameters":
            text = f"{n_params:,} parameters > budget {int(budget):,}"
        elif name == "flops":
            text = f"{self.cost:,.0f} FLOPs > flops_budget {budget:,.0f}"
        elif name == "latency_ms":
            text = f"latency {self.cost:.2f} ms > latency_budget_ms {budget:g}"
        else:
            text = f"training memory {self.cost:,.0f} MB > memory_budget_mb {budget:g}"
        super().__init__(text)


@dataclass(frozen=True)
class Candidate:
    """What a trial trains: an architecture, a recipe, and the architecture's size."""

    arch: ArchConfig
    train: TrainConfig
    n_params: int
    costs: dict[str, float] = field(default_factory=dict)  # every budget's cost

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
    flops_budget: int | None = None  # forward FLOPs at 32x32, inclusive
    latency_budget_ms: float | None = None  # measured forward latency (space.budgets)
    latency_batch: int = 64
    memory_budget_mb: float | None = None  # measured peak training memory on CUDA
    memory_batch: int | None = None  # images per step; None: the recipe's (memory_images)
    objectives: tuple[str, ...] = ("val_acc",)  # more: a multi-objective (Pareto) study
    max_stages: int = field(init=False)
    arch_space: ArchSpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_stages", max(self.arch["stages"].values()))
        object.__setattr__(self, "arch_space", ArchSpace(self.arch))

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def memory_images(self) -> int:
        """The batch the memory budget is measured at: ``memory_batch`` where the file sets
        it, else the recipe's batch size (the largest a search trial may draw)."""
        if self.memory_batch is not None:
            return self.memory_batch
        dim = self.train.get("batch_size")
        return int(max(dim.extremes())) if dim is not None else TrainConfig.batch_size

    @property
    def limits(self) -> Limits:
        return Limits(self.budget, self.flops_budget, self.latency_budget_ms,
                      self.latency_batch, self.memory_budget_mb, self.memory_images)

    def budgets(self, device: str | None = None) -> list[Budget]:
        """What an architecture must stay within, cheapest first: the counted budgets
        (parameters, FLOPs), and with a ``device`` the measured ones too (latency, memory;
        `space.budgets.make_budgets` gives their meters, to bind to a store)."""
        if device is None:
            return make_budgets(dataclasses.replace(self.limits, latency_ms=None,
                                                    memory_mb=None))[0]
        return make_budgets(self.limits, device)[0]

    def fingerprint(self, *, legacy_memory_batch: bool = False) -> str:
        """A short hash of what a trial may draw: the ``[arch]`` and ``[train]`` spaces
        and the budget (not the name, description, n_trials, [final], sampler or pruner).

        A study keeps it, so that a changed file cannot quietly mix two spaces in one study.
        Keys added since fingerprints began count only where a file moves them off their
        defaults, so a study file of that release keeps its fingerprint.
        ``legacy_memory_batch``: the one an earlier release gave this file, which measured
        an unset ``memory_batch`` at 512 images (`LEGACY_MEMORY_BATCH`).
        """
        import hashlib
        import json

        def canonical(dims: dict[str, Dim]) -> dict[str, Any]:
            return {key: {**{k: v for k, v in dataclasses.asdict(dim).items()
                             if k not in ("key", "tp")}, "tp": getattr(dim.tp, "__name__",
                                                                       str(dim.tp))}
                    for key, dim in sorted(dims.items())}

        defaults = {row.key: row.default for row in arch_keys()[3]}
        arch = {key: dim for key, dim in self.arch.items()  # see LATER_KEYS
                if not (key in LATER_KEYS and dim.fixed and dim.value == defaults[key])}
        limits = {key: getattr(self, key) for key in ("flops_budget", "latency_budget_ms",
                                                      "memory_budget_mb") if getattr(self, key)}
        if self.latency_budget_ms:
            limits["latency_batch"] = self.latency_batch
        if self.memory_budget_mb:
            limits["memory_batch"] = self.memory_images
            if legacy_memory_batch and self.memory_batch is None:
                limits["memory_batch"] = LEGACY_MEMORY_BATCH
        if self.multi_objective:
            limits["objectives"] = list(self.objectives)
        text = json.dumps({"arch": canonical(arch), "train": canonical(self.train),
                           "budget": self.budget, **limits}, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- sampling -------------------------------------------------------------

    def sample_arch(self, trial: Suggester) -> ArchConfig:
        """Draw an architecture; parameters are named ``stages``, ``stage2_width``, ..."""
        return self.arch_space.sample(trial)

    def sample_train(self, trial: Suggester) -> TrainConfig:
        """Draw a recipe for a search trial.

        Validation uses test-time augmentation on the last epoch only, unless trials
        differ in length (``epochs`` is searched): then on every epoch, so that the pruner
        compares a short trial's last epoch with a long one's same epoch measured alike.
        A study file's own ``val_tta`` wins.
        """
        values = {key: dim.suggest(trial, key) for key, dim in self.train.items()}
        if "val_tta" not in values and "epochs" in self.train \
                and len(set(self.train["epochs"].extremes())) > 1:
            values["val_tta"] = "every"
        return TrainConfig(**values)

    def sample(self, trial: Any, budgets: list[Budget] | None = None) -> Candidate:
        """Draw a candidate for ``trial`` (an `optuna.Trial` or `FixedTrial`).

        Writes nothing on the trial: what a search records is `search.record`'s.

        Args:
            budgets: what it must stay within (default: the counted `budgets`); checked
                in order, so a measured budget is measured only for what passed the
                counted ones.

        Raises:
            OverBudget: the architecture is over one of the budgets (it says which, and
                ``n_params``); no recipe is drawn.
        """
        arch = self.sample_arch(trial)
        n_params = count_params(arch)
        costs: dict[str, float] = {}
        for budget in budgets if budgets is not None else self.budgets():
            costs[budget.name] = cost = float(budget.cost(arch))
            if cost > budget.limit:
                raise OverBudget(n_params, budget.limit, budget.name, cost, costs)
        return Candidate(arch, self.sample_train(trial), n_params, costs)

    def final_train(self, train: TrainConfig) -> TrainConfig:
        """The full-training recipe for a trial's recipe (`search promote`)."""
        return dataclasses.replace(train, **self.final)

    def arch_params(self, arch: ArchConfig) -> dict[str, Any]:
        """Trial parameters that make `sample_arch` return ``arch``.

        Raises:
            ValueError: ``arch`` lies outside this space; the message says where.
        """
        return self.arch_space.params(arch)

    # -- description ----------------------------------------------------------

    def dims(self) -> list[tuple[str, Dim, str]]:
        """(section.key, dim, condition) rows for display."""
        rows = list(self.arch_space.rows())
        rows += [(f"train.{k}", d, "") for k, d in self.train.items()]
        return rows


def make_sampler(spec: StudySpec, *, seed: int | None = None, budget_aware: bool | None = None,
                 budgets: list[Budget] | None = None) -> optuna.samplers.BaseSampler:
    """The sampler the study file names; ``seed`` overrides the file's seed.

    ``budget_aware`` (default: the file's, else true) wraps it in a
    `space.sampler.BudgetAwareSampler` that proposes with `StudySpec.sample_arch`
    and redraws what is over `StudySpec.budgets`.
    """
    return build_sampler(spec.sampler, propose=spec.sample_arch,
                         budgets=budgets if budgets is not None else spec.budgets(),
                         seed=seed, budget_aware=budget_aware)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The pruner the study file names; it sees validation accuracy once per epoch."""
    return build_pruner(spec.pruner)


# -- loading ----------------------------------------------------------------------


def study_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study, or None: it becomes a folder under ``runs/``, so
    no path (``../x``) may pass; the file's ``[study].name`` and ``--study-name`` share this."""
    if NAME_RE.fullmatch(name):
        return None
    return f"must be letters, digits, '.', '_' or '-', starting with a letter or digit, " \
        f"got {name!r}"


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
    elif path.is_dir():
        raise SpecError(f"{text_name}: is a directory, not a study file")
    elif path.exists():  # a FIFO or a device: reading it could block for good
        raise SpecError(f"{text_name}: is not a regular file (a study file is TOML text)")
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

    study_table = dict(tables["study"])
    objectives = _parse_objectives(where, study_table.pop("objectives", ["val_acc"]),
                                   "latency_budget_ms" in study_table)
    study = read_options(where, "study", study_table, STUDY_OPTIONS)
    name = study.get("name", default_name)
    problem = study_name_problem(name)
    if problem:
        raise SpecError(f"{where}: study.name: {problem}")

    arch = parse_arch(where, tables["arch"]).dims
    train = _parse_train(where, tables["train"])
    final = _parse_final(where, tables["final"], train)
    sampler = read_options(where, "sampler", tables["sampler"], SAMPLER_OPTIONS)
    pruner = read_options(where, "pruner", tables["pruner"], PRUNER_OPTIONS)
    spec = StudySpec(
        name=name, source=where, budget=study.get("budget", DEFAULT_BUDGET),
        description=study.get("description", ""), arch=arch, train=train, final=final,
        sampler=sampler, pruner=pruner, n_trials=study.get("n_trials", 100),
        objectives=objectives,
        **{key: study[key] for key in ("flops_budget", "latency_budget_ms", "latency_batch",
                                       "memory_budget_mb", "memory_batch") if key in study},
    )
    _check_sampler(where, sampler)
    _check_pruner(where, pruner)
    # Building them validates the options against each other.
    for section, make in (("sampler", make_sampler), ("pruner", make_pruner)):
        try:
            make(spec)
        except ValueError as err:
            raise SpecError(f"{where}: {section}: {err}") from None
    return spec


SIZE_OBJECTIVES = ("params", "flops", "latency")  # search.record.SIZE_OBJECTIVES


def _parse_objectives(where: str, value: Any, has_latency: bool) -> tuple[str, ...]:
    """``[study] objectives``: ``["val_acc"]``, or it and up to two of `SIZE_OBJECTIVES`."""
    allowed = f'["val_acc"], or "val_acc" then up to two of {list(SIZE_OBJECTIVES)}'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: study.objectives: must be a list of names, {allowed}")
    if not value or value[0] != "val_acc" or len(value) > 3 or len(set(value)) != len(value) \
            or any(v not in SIZE_OBJECTIVES for v in value[1:]):
        raise SpecError(f"{where}: study.objectives: {value} must be {allowed}")
    if "latency" in value and not has_latency:
        raise SpecError(f"{where}: study.objectives: 'latency' is measured only with a "
                        "latency_budget_ms (set one as high as you like)")
    return tuple(value)


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
    "flops_budget": Option(int, lambda v: v > 0, "must be > 0 (forward FLOPs at 32x32)"),
    "latency_budget_ms": Option(float, lambda v: v > 0, "must be > 0 milliseconds"),
    "latency_batch": Option(int, lambda v: 1 <= v <= 4096, "must be in 1..4096 images"),
    "memory_budget_mb": Option(float, lambda v: v > 0, "must be > 0 MB"),
    "memory_batch": Option(int, lambda v: 1 <= v <= 65536, "must be in 1..65536 images"),
}


def _train_check(key: str) -> Any:
    # A long run, so that warmup_epochs is judged against the epochs, not the default.
    return config_check(lambda **kw: TrainConfig(**{"epochs": 10**6, **kw}), key)


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
    val_size = dims.get("val_size")
    if val_size is not None and 0 in val_size.extremes():
        raise SpecError(f"{where}: train.val_size: 0 (no validation split) is for [final] only: "
                        "a search trial is judged and pruned on its validation accuracy")
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
