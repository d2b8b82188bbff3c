"""The executor registry: the CLI's choices come from it, and a new executor is one class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest

from search import record
from search.cli import build_parser, main
from search.executors import (
    EXECUTORS,
    Executor,
    Placement,
    PlacementError,
    make_executor,
    register_executor,
)
from search.worker import WorkerConfig, run_worker
from tests.conftest import SHARED_ARCHIVE, need_shared_archive


class InlineExecutor(Executor):
    """Runs the workers one after another in this process (what a notebook might want)."""

    name = "inline-test"
    ran: ClassVar[list[int]] = []

    def placement(self, workers: int | None, gpus_per_worker: float, device: str | None,
                  trials_left: int | None = None) -> Placement:
        return Placement(workers or 1, 0.0, 1.0, 1, "this process")

    def run_workers(self, configs: list[WorkerConfig], tick: Callable[[], None]) -> None:
        for cfg in configs:
            self.ran.append(run_worker(cfg))
            tick()

    def call(self, fn: Callable[[Any], Any], arg: Any, *, gpus: float, what: str,
             say: Callable[[str], None]) -> Any:
        return fn(arg)


@pytest.fixture
def inline() -> Iterator[type[InlineExecutor]]:
    register_executor(InlineExecutor)
    InlineExecutor.ran = []
    try:
        yield InlineExecutor
    finally:
        del EXECUTORS[InlineExecutor.name]


def _choices(command: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    action = next(a for a in parser._actions if a.dest == "executor")
    return tuple(action.choices or ())


def test_the_cli_offers_exactly_the_registered_executors(inline: type[InlineExecutor]) -> None:
    assert set(EXECUTORS) >= {"local", "ray", "inline-test"}
    assert _choices("run") == tuple(EXECUTORS)
    assert isinstance(make_executor("inline-test"), InlineExecutor)


def test_an_unknown_executor_and_a_second_registration_are_refused() -> None:
    with pytest.raises(PlacementError, match=r"unknown executor 'nope' \(known: .*local"):
        make_executor("nope")

    class Other(InlineExecutor):
        name = "local"

    with pytest.raises(ValueError, match="'local' is registered already"):
        register_executor(Other)
    assert EXECUTORS["local"].__name__ == "LocalExecutor"


def test_a_registered_executor_runs_a_search_from_the_cli(inline: type[InlineExecutor],
                                                          tmp_path: Path) -> None:
    need_shared_archive()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(["run", "--study", "smoke", "--storage", url, "--n-trials", "4",
                 "--executor", "inline-test", "--workers", "2", "--data", str(SHARED_ARCHIVE),
                 "--device", "cpu", "--no-baselines", "--trainer",
                 "tests.search.trainers:instant"])
    assert code == 0
    # The first worker ran the study to its end; the second found nothing left to do.
    assert inline.ran == [4, 0]
    trials = optuna.load_study(study_name="smoke", storage=url).get_trials()
    assert record.count_finished(trials) == (4, 0)


def test_a_trainer_that_cannot_be_loaded_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--study", "smoke", "--trainer", "tests.search.trainers:nope",
                 "--executor", "local"])
    assert code == 2
    assert "--trainer: trainer 'tests.search.trainers:nope' cannot be loaded" in \
        capsys.readouterr().err
