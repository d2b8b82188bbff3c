"""Schemas of the small option tables: ``[study]``, ``[sampler]`` and ``[pruner]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.validate import ConfigError, check_type
from space.dims import SpecError


@dataclass(frozen=True)
class Option:
    """One key of an option table: its type, a rule, and the ``type`` values it serves."""

    tp: Any
    rule: Callable[[Any], bool] | None = None
    problem: str = ""
    only: tuple[str, ...] = ()  # empty: every type of sampler/pruner
    default: Any = None

    def read(self, name: str, value: Any) -> Any:
        value = check_type(name, value, self.tp)
        if self.rule is not None and not self.rule(value):
            raise ConfigError(name, value, self.problem)
        return value


def read_options(where: str, section: str, table: dict[str, Any],
                 schema: dict[str, Option]) -> dict[str, Any]:
    """Validate ``table`` against ``schema``; keys marked ``only`` need a matching ``type``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        option = schema.get(key)
        if option is None:
            raise SpecError(f"{where}: {section}.{key}: unknown key (known: {', '.join(schema)})")
        try:
            out[key] = option.read(key, value)
        except ConfigError as err:
            raise SpecError(f"{where}: {section}.{key}: {err.problem}, got {value!r}") from None
    if "type" in schema:
        kind = out.setdefault("type", schema["type"].default)
        for key in out:
            only = schema[key].only
            if only and kind not in only:
                raise SpecError(f"{where}: {section}.{key}: does not apply to type {kind!r} "
                                f"(only to {', '.join(only)})")
    return out


def _one_of(*choices: str) -> Option:
    """A string option; the first choice is the default."""
    return Option(str, lambda v: v in choices, f"must be one of {', '.join(choices)}",
                  default=choices[0])


def _at_least(tp: Any, low: float, only: tuple[str, ...] = ()) -> Option:
    return Option(tp, lambda v: v >= low, f"must be >= {low}", only)


def _between(tp: Any, low: float, high: float, only: tuple[str, ...] = ()) -> Option:
    return Option(tp, lambda v: low <= v <= high, f"must be in {low}..{high}", only)


def _resource(only: tuple[str, ...]) -> Option:
    return Option(int | str, lambda v: v == "auto" if isinstance(v, str) else v >= 1,
                  "must be a whole number of epochs >= 1 or \"auto\"", only)


TPE = ("tpe",)
SAMPLER_OPTIONS: dict[str, Option] = {
    "type": _one_of("tpe", "random", "nsga2"),
    "seed": _at_least(int, 0),
    "budget_aware": Option(bool),  # redraw proposals over the budget inside the sampler
    "max_draws": _at_least(int, 1),  # redraws per trial before an over-budget one goes through
    "dedupe": Option(bool),  # redraw a proposal whose parameters a trial already has
    "n_startup_trials": _at_least(int, 0, TPE),
    "n_ei_candidates": _between(int, 1, 100_000, TPE),  # TPE draws this many per parameter
    "multivariate": Option(bool, only=TPE),
    "group": Option(bool, only=TPE),
    "constant_liar": Option(bool, only=TPE),
    # NSGA-II (a genetic algorithm; mostly for multi-objective studies): its generation size
    "population_size": _between(int, 2, 10_000, ("nsga2",)),
    "crossover_prob": Option(float, lambda v: 0 <= v <= 1, "must be in 0..1", ("nsga2",)),
}

HB, SH = ("hyperband",), ("successive_halving",)
MEDIAN_LIKE = ("median", "percentile")
PRUNER_OPTIONS: dict[str, Option] = {
    "type": _one_of("hyperband", "successive_halving", "median", "percentile", "none"),
    "min_resource": _resource(HB + SH),
    "max_resource": _resource(HB),
    "reduction_factor": _at_least(int, 2, HB + SH),
    "min_early_stopping_rate": _at_least(int, 0, SH),
    "n_startup_trials": _at_least(int, 0, MEDIAN_LIKE),
    "n_warmup_steps": _at_least(int, 0, MEDIAN_LIKE),
    "interval_steps": _at_least(int, 1, MEDIAN_LIKE),
    "percentile": Option(float, lambda v: 0 <= v <= 100, "must be in 0..100", ("percentile",)),
}
