"""The smallest architecture of a space, found without a study: can anything fit the budget?

A space whose every architecture is over the budget would run a whole search of
pruned trials. `smallest_arch` walks the space with a stand-in trial that answers
each parameter with one of its values (every value of a small dimension, else its
ends), starting from the lowest, and keeps changing one parameter at a time while
that makes the network smaller. Parameter counts are exact and cost microseconds,
so this takes a few milliseconds for the built-in spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from models.config import ArchConfig
from models.validate import ConfigError

MAX_VALUES = 16  # a range with more values is tried at its ends only
MAX_ROUNDS = 5  # passes over the parameters; each pass must shrink the network


class _Pick:
    """A suggester that answers each parameter from ``chosen``, else with its first value,
    and remembers which values each parameter could take."""

    def __init__(self, chosen: dict[str, Any]) -> None:
        self.chosen = chosen
        self.options: dict[str, list[Any]] = {}
        self.answers: dict[str, Any] = {}

    def _pick(self, name: str, options: list[Any]) -> Any:
        value = self.chosen.get(name)
        self.options[name] = options
        self.answers[name] = value if value in options else options[0]
        return self.answers[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        values = range(low, high + 1, step)
        return int(self._pick(name, list(values) if len(values) <= MAX_VALUES
                              else [low, values[-1]]))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._pick(name, [low, high]))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        values = list(choices)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return self._pick(name, sorted(values) if numeric else values)


def smallest_arch(sample: Callable[[Any], ArchConfig],
                  cost: Callable[[ArchConfig], float]) -> tuple[ArchConfig, float]:
    """The smallest architecture ``sample`` (e.g. `StudySpec.sample_arch`) makes that this
    search finds, by ``cost``; lowest values first, then one parameter at a time.

    Not an exhaustive search (cost need not be monotone in each parameter), but
    it finds the smallest network of every built-in space.
    """
    pick = _Pick({})
    best = sample(pick)
    best_cost = cost(best)
    for _ in range(MAX_ROUNDS):
        shrunk = False
        for name, options in list(pick.options.items()):
            for value in options:
                if pick.answers.get(name) == value:
                    continue
                trial = _Pick({**pick.answers, name: value})
                try:
                    arch = sample(trial)
                except (ConfigError, ValueError):  # a combination the space refuses
                    continue
                if cost(arch) < best_cost:
                    best, best_cost, pick, shrunk = arch, cost(arch), trial, True
        if not shrunk:
            break
    return best, best_cost


class _Draw(_Pick):
    """A suggester that answers each parameter with a random value of its whole range."""

    def __init__(self, rng: Any) -> None:
        super().__init__({})
        self.rng = rng

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        return int(self._pick(name, [self.rng.randrange(low, high + 1, step)]))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._pick(name, [self.rng.uniform(low, high)]))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, [self.rng.choice(list(choices))])


def fitting_draw(sample: Callable[[Any], ArchConfig], cost: Callable[[ArchConfig], float],
                 limit: float, *, draws: int = 2000, seed: int = 0) -> ArchConfig | None:
    """A random architecture of the space within ``limit``, if ``draws`` draws find one.

    The check before refusing a space: `smallest_arch` is a local search, and a space
    must not be refused because it missed a small corner that a sampler would find.
    """
    import random

    rng = random.Random(seed)
    for _ in range(draws):
        try:
            arch = sample(_Draw(rng))
        except (ConfigError, ValueError):
            continue
        if cost(arch) <= limit:
            return arch
    return None
