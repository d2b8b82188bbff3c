"""One search dimension of a study file: a fixed value, a list of choices, or a range.

In TOML, a scalar is fixed (never shown to the sampler), a list is a set of
choices, and a table ``{ low = ..., high = ..., step = ..., log = ... }`` is a
numeric range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from models.validate import ConfigError, check_type


class SpecError(ValueError):
    """A study file that cannot be used; the message names the file, key and problem.

    The message is one line, even where a key or value from the file holds line breaks.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class Suggester(Protocol):
    """What the space needs from a trial: `optuna.Trial`, `FixedTrial`, or a proposal."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


RANGE_KEYS = ("low", "high", "step", "log")
MAX_CHECKED = 10_000  # int ranges up to this many values have every value checked
MAX_STEPS = 10**9  # values of a float range with a step; Optuna's decimal arithmetic fails at 1e28


@dataclass(frozen=True)
class Dim:
    """A dimension named ``key`` (e.g. ``"arch.width"``) of Python type ``tp``."""

    key: str
    tp: Any
    value: Any = None  # the value, when fixed
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choice"
        if self.low is not None:
            return "int" if self.tp is int else "float"
        return "fixed"

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"

    def suggest(self, trial: Suggester, name: str) -> Any:
        """Ask ``trial`` for this dimension's value under parameter ``name``."""
        kind = self.kind
        if kind == "fixed":
            return self.value
        if kind == "choice":
            return trial.suggest_categorical(name, self.choices)
        if kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high),  # type: ignore[arg-type]
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high),  # type: ignore[arg-type]
                                   step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        kind = self.kind
        if kind == "fixed":
            return bool(value == self.value)
        if kind == "choice":
            assert self.choices is not None
            return value in self.choices
        assert self.low is not None and self.high is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return kind == "float" or float(value).is_integer()

    def extremes(self) -> list[Any]:
        """The values whose validity stands for all: each choice, or a range's ends."""
        kind = self.kind
        if kind == "fixed":
            return [self.value]
        if kind == "choice":
            return list(self.choices or ())
        return [self.tp(self.low), self.tp(self.high)]

    def values(self) -> list[Any]:
        """Every value of a discrete dimension (fixed, choices, or an int range)."""
        if self.kind == "float":
            raise ValueError(f"{self.key} is a continuous range")
        if self.kind != "int":
            return self.extremes()
        assert self.low is not None and self.high is not None
        if self.log:
            return list(range(int(self.low), int(self.high) + 1))
        return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def describe(self) -> str:
        kind = self.kind
        if kind == "fixed":
            return f"= {self.value!r}"
        if kind == "choice":
            return "{" + ", ".join(repr(c) for c in self.choices or ()) + "}"
        text = f"[{self.low:g}, {self.high:g}]"
        if self.step:
            text += f" step {self.step:g}"
        if self.log:
            text += " log"
        return text


def config_check(make: Callable[..., Any], key: str) -> Callable[[Any], None]:
    """A check that builds a config with ``key`` set, so the dataclass's own rules apply."""

    def check(value: Any) -> None:
        try:
            make(**{key: value})
        except ConfigError as err:
            raise ConfigError(key, value, err.problem) from None

    return check


def parse_dim(where: str, key: str, raw: Any, tp: Any,
              check: Callable[[Any], None] | None = None) -> Dim:
    """Read a study-file value for ``key`` as a `Dim` of type ``tp``.

    ``check(value)`` validates one value's meaning (raising `ConfigError`); it is
    applied to each choice, to every value of an int range (up to `MAX_CHECKED`
    of them) and to both ends of other ranges. Every failure is a `SpecError`
    that starts with ``where`` (the file) and names ``key``.
    """

    def fail(problem: str) -> SpecError:
        return SpecError(f"{where}: {key}: {problem}")

    def typed(value: Any, what: str) -> Any:
        try:
            value = check_type(key, value, tp)
            if check is not None:
                check(value)
        except ConfigError as err:
            raise fail(f"{what}{err.problem}, got {err.value!r}") from None
        return value

    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - set(RANGE_KEYS))
        if unknown:
            raise fail(f"unknown range key {unknown[0]!r} (a range has {', '.join(RANGE_KEYS)})")
        if tp not in (int, float):
            raise fail("a range needs a numeric field; give a list of choices instead")
        if "low" not in raw or "high" not in raw:
            raise fail("a range needs both 'low' and 'high'")
        low = typed(raw["low"], "low ")
        high = typed(raw["high"], "high ")
        if low > high:
            raise fail(f"empty range: low {low!r} > high {high!r}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise fail(f"log must be true or false, got {log!r}")
        step = raw.get("step")
        if step is not None:
            try:
                step = check_type("step", step, tp)
            except ConfigError as err:
                raise fail(f"step {err.problem}, got {step!r}") from None
            if step <= 0:
                raise fail(f"step must be > 0, got {step!r}")
            if log:
                raise fail("a range cannot have both 'step' and 'log'")
            if tp is float and not (high - low) / step <= MAX_STEPS:
                raise fail(f"step {step!r} makes more than {MAX_STEPS:,} values in "
                           f"[{low!r}, {high!r}]")
        if log and low <= 0:
            raise fail(f"a log range needs low > 0, got {low!r}")
        if low == high:
            return Dim(key, tp, value=low)
        dim = Dim(key, tp, low=low, high=high, step=step, log=log)
        if tp is int and check is not None and (high - low) // (step or 1) <= MAX_CHECKED:
            # Rules like "odd" or "power of two" can fail between valid ends.
            for value in dim.values():
                typed(value, "a value inside the range ")
        return dim
    if isinstance(raw, list):
        if not raw:
            raise fail("empty list of choices")
        choices = tuple(typed(v, f"choice {i}: ") for i, v in enumerate(raw))
        if len(set(choices)) != len(choices):
            raise fail(f"repeated choice in {list(choices)!r}")
        if len(choices) == 1:
            return Dim(key, tp, value=choices[0])
        return Dim(key, tp, choices=choices)
    return Dim(key, tp, value=typed(raw, ""))

