"""Shared test helpers."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

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


def missing(reason: str, variable: str) -> NoReturn:
    """Skip a test whose prerequisite is absent, or fail it when ``variable`` is set.

    CI sets the variables (SEARCH_REQUIRE_SHARED_DATA, SEARCH_REQUIRE_POSTGRES,
    SEARCH_REQUIRE_BROWSER), where a silent skip would pass a suite that tested nothing.
    """
    if os.environ.get(variable, "") not in ("", "0"):
        pytest.fail(f"{reason}; {variable} is set", pytrace=False)
    pytest.skip(reason)


def need_shared_archive() -> Path:
    """The shared archive; skips the test without it (fails under SEARCH_REQUIRE_SHARED_DATA)."""
    if not SHARED_ARCHIVE.exists():
        missing(f"{SHARED_ARCHIVE} is missing", "SEARCH_REQUIRE_SHARED_DATA")
    return SHARED_ARCHIVE


@pytest.fixture(scope="session")
def shared_archive() -> Path:
    """For whole modules: ``pytestmark = pytest.mark.usefixtures("shared_archive")``.

    Session-scoped, so that it runs before the modules' own module-scoped fixtures.
    """
    return need_shared_archive()


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data cache for the test session (tests set $SEARCH_CACHE to it)."""
    return tmp_path_factory.mktemp("cifar-cache")


@pytest.fixture(scope="session")
def cifar_jpeg(cifar_cache: Path) -> CifarData:
    """The shared archive, decoded once per test session into the private cache."""
    from trainers.data import load_cifar10

    return load_cifar10(need_shared_archive(), cache_dir=cifar_cache)
