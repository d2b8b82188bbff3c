"""Shared test helpers."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trainers.data import CifarData

# A small valid study file; tests change one line of it at a time.
MINIMAL_STUDY = """\
[study]
name = "mini"
budget = 100_000

[arch]
stages = { low = 2, high = 3 }
blocks = { low = 1, high = 2 }
width = [16, 32]

[train]
epochs = 2
lr = { low = 0.01, high = 0.1, log = true }

[final]
epochs = 4

[sampler]
type = "tpe"

[pruner]
type = "hyperband"
"""


class RandomSuggester:
    """Draws each suggested parameter uniformly with a seeded RNG, like a RandomSampler.

    Lets tests draw many architectures from a study's space without a study.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        value = self.rng.randrange(low, high + 1, step)
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        value = self.rng.uniform(low, high)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self.rng.choice(list(choices))
        self.params[name] = value
        return value

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


# The shared CIFAR-10 JPEG archive beside the checkout (../shared/data), as in CI.
SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data cache for the test session (tests set $SEARCH_CACHE to it)."""
    return tmp_path_factory.mktemp("cifar-cache")


@pytest.fixture(scope="session")
def cifar_jpeg(cifar_cache: Path) -> CifarData:
    """The shared archive, decoded once per test session into the private cache."""
    from trainers.data import load_cifar10

    if not SHARED_ARCHIVE.exists():
        if os.environ.get("SEARCH_REQUIRE_SHARED_DATA"):
            pytest.fail(f"{SHARED_ARCHIVE} is missing")
        pytest.skip(f"{SHARED_ARCHIVE} is missing")
    return load_cifar10(SHARED_ARCHIVE, cache_dir=cifar_cache)
