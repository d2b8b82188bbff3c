"""Where workers run: a small base class and a registry of executors.

An executor places the search's workers (each runs `search.worker.run_worker`)
and single tasks (`search promote`'s training) on some set of machines. Two are
registered: ``local`` (subprocesses of this command) and ``ray`` (tasks on a Ray
cluster). The CLI's ``--executor`` choices come from `EXECUTORS`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from search.worker import WorkerConfig

Tick = Callable[[], None]
T = TypeVar("T")
INTERRUPT_WAIT_S = 60  # how long interrupted workers get to mark their trials
POLL_S = 2.0  # seconds between looks at the running workers
# A test and operations knob: $SEARCH_POLL_S replaces POLL_S (read at each use).
POLL_ENV = "SEARCH_POLL_S"
RESPAWNS = 3  # restarts of a worker killed by a signal (Ray: retries of its task)


class WorkerError(RuntimeError):
    """A worker stopped with an error (its trials are in the store)."""


class PlacementError(ValueError):
    """Workers cannot be placed as asked (printed as one line, exit code 2)."""


@dataclass(frozen=True)
class Placement:
    """How many workers run, and what each holds."""

    workers: int
    gpus_per_worker: float  # 0: the workers train on CPUs
    cpus_per_worker: float  # CPU share per worker (fractions allowed on Ray)
    cpu_threads: int | None  # torch threads per worker; None: torch's default
    where: str  # "this machine", "Ray cluster at ..."
    reduced: str = ""  # why fewer workers start than were asked for; "" if none were cut

    def describe(self) -> str:
        held = (f"{self.gpus_per_worker:g} GPU each" if self.gpus_per_worker
                else f"CPU, {self.cpu_threads} thread(s) each")
        return f"{self.workers} worker(s) on {self.where}, {held}"


def poll_s() -> float:
    """`POLL_S`, or ``$SEARCH_POLL_S`` where set.

    Raises:
        PlacementError: the knob is not a number of seconds > 0.
    """
    from search.args import env_seconds

    return env_seconds(POLL_ENV, POLL_S, PlacementError)


class Executor(abc.ABC):
    """Runs workers and tasks somewhere; a context manager that releases what it started.

    Contract of `run_workers`: run ``run_worker(cfg)`` once per config, call
    ``tick()`` every few seconds while any runs and once at the end, return when all
    have ended. A worker that raised makes it stop the others and raise
    `WorkerError`; on ``KeyboardInterrupt`` it interrupts every worker (so each
    marks its running trial FAIL) and re-raises. A worker killed by a signal is
    started again, up to `RESPAWNS` times.
    """

    name: ClassVar[str]

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - a hook; most executors hold nothing
        """Release what this executor started (a local Ray instance, say)."""

    @abc.abstractmethod
    def placement(self, workers: int | None, gpus_per_worker: float, device: str | None,
                  trials_left: int | None = None) -> Placement:
        """How many workers (``workers``, else one per GPU share, else 1) and what each holds.

        Never more than ``trials_left`` nor than the machines hold (see `fit_workers`).
        """

    @abc.abstractmethod
    def run_workers(self, configs: list[WorkerConfig], tick: Tick) -> None:
        """Run the workers until all have ended (see the class docstring)."""

    @abc.abstractmethod
    def call(self, fn: Callable[[Any], T], arg: Any, *, gpus: float, what: str,
             say: Callable[[str], None]) -> T:
        """``fn(arg)`` as one task holding ``gpus`` GPUs where there are any; its result.

        ``fn`` and ``arg`` must pickle; the task's own exception is re-raised here.
        """


def fit_workers(requested: int | None, default: int, room: int, room_text: str,
                trials_left: int | None) -> tuple[int, str]:
    """Workers to start: ``requested`` (else ``default``), at most ``room`` (what the
    machines hold: each worker is a process of ~100 MB or more, and more workers than
    cores or GPU shares only compete) and at most the trials left; with the reason
    when a request was cut, as the line `search run` prints.
    """
    limits = [(room, room_text)]
    if trials_left is not None:
        limits.insert(0, (trials_left, f"{trials_left} trial{'s' if trials_left != 1 else ''} "
                                       "left"))
    n = max(1, min(requested or default, *(limit for limit, _ in limits)))
    if not requested or n >= requested:
        return n, ""
    return n, (f"workers  {requested} requested, {n} started "
               f"({', '.join(text for _, text in limits)})")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


EXECUTORS: dict[str, type[Executor]] = {}


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Add ``cls`` to `EXECUTORS` under ``cls.name``; a name may be registered once."""
    if cls.name in EXECUTORS and EXECUTORS[cls.name] is not cls:
        raise ValueError(f"executor {cls.name!r} is registered already")
    EXECUTORS[cls.name] = cls
    return cls


def make_executor(name: str, address: str | None = None) -> Executor:
    """The executor registered as ``name``, for the cluster at ``address`` (if it has one)."""
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise PlacementError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})") \
            from None
    return cls(address)
