"""One search worker: trials of a study, one after another, on one device.

Every executor runs this same function (in a Ray task, a subprocess or the
calling process). It loads the study file and the data itself, opens its own
connection to the store and calls ``study.optimize`` one trial at a time, which
keeps Optuna's heartbeat working, until the study has ``n_trials`` finished
trials.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

TRAINER = "trainers.training:fit"
POLL_S = 5.0  # seconds between looks at the store while waiting for other workers
STORE_OUTAGE_S = 600.0  # how long a worker waits for an unreachable store before giving up
# What a database that went away raises, directly or wrapped by Optuna.
STORE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, as plain values that pickle across processes."""

    study: str  # built-in study name or study file path
    study_name: str  # the study's name in the store
    storage_url: str
    n_trials: int  # finished trials the whole study should reach
    data: str  # data set path
    device: str | None = None  # "cuda", "cpu"; None: CUDA if present
    seed: int | None = None  # sampler seed; each worker adds its index
    worker: int = 0  # index among the workers
    timeout: float | None = None  # seconds after which no new trial starts
    trainer: str = TRAINER  # "module:function" with the signature of trainers.fit
    cpu_threads: int | None = None  # torch threads on CPU, so workers share the cores
    stop_with_parent: bool = False  # a local subprocess: stop when the driver dies


class TrialFailure(Exception):
    """A trial that failed on its own (divergence, out of memory, bad data).

    The reason is on the trial as ``fail_reason``; the worker goes on.
    """


def finished(trial: optuna.trial.FrozenTrial) -> bool:
    """Counts toward ``n_trials``: complete, pruned, or failed for a reason of its own.

    A trial failed by a dead worker's heartbeat (or an interrupt) does not count:
    its parameters run again.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def count_finished(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of the study."""
    trials = study.get_trials(deepcopy=False)
    return (sum(finished(t) for t in trials),
            sum(t.state == TrialState.RUNNING for t in trials))


def load_trainer(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    trainer: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return trainer


class Objective:
    """Samples a candidate, trains it, reports each epoch to the pruner."""

    def __init__(self, cfg: WorkerConfig, spec: Any, data: Any,
                 on_start: Callable[[], None] = lambda: None) -> None:
        self.cfg, self.spec, self.data = cfg, spec, data
        self.trainer = load_trainer(cfg.trainer)
        self.host = socket.gethostname()
        self.on_start = on_start  # called once the trial exists in the store

    def __call__(self, trial: optuna.Trial) -> float:
        import torch

        from trainers import DataError, TrainingDiverged

        self.on_start()
        candidate = self.spec.sample(trial)  # OverBudget (pruned) before anything trains
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        for key, value in {
            "flops": candidate.flops, "arch": candidate.arch.to_json(),
            "arch_summary": candidate.arch.describe(), "train": candidate.train.to_json(),
            "device": torch.cuda.get_device_name() if device == "cuda" else device,
            "host": self.host, "worker": self.cfg.worker, "pid": os.getpid(),
            "data_source": self.data.source,
        }.items():
            trial.set_user_attr(key, value)

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics["val_acc"], epoch)
            trial.set_user_attr("seconds_per_epoch", round(metrics["seconds"], 3))
            trial.set_user_attr("images_per_s", round(metrics["images_per_s"], 1))
            trial.set_user_attr("val_loss", round(metrics["val_loss"], 4))
            return trial.should_prune()

        try:
            result = self.trainer(candidate.arch, candidate.train, self.data, device=device,
                                  report=report, log=lambda _: None)
        except (TrainingDiverged, torch.OutOfMemoryError, DataError, ValueError) as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            trial.set_user_attr("fail_reason", reason[:500])
            if isinstance(err, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            raise TrialFailure(reason) from err
        if result.stopped:
            raise optuna.TrialPruned(f"pruned after epoch {result.epochs}")
        return float(result.val_acc)


def run_worker(cfg: WorkerConfig) -> int:
    """Run trials until the study has ``cfg.n_trials`` finished ones; return how many ran here.

    Raises:
        SpecError, DataError, StorageError: the study file, the data or the store
            cannot be used at all (no trial is started).
    """
    from search.storage import StartLock, open_storage
    from space import load_spec, make_pruner, make_sampler
    from trainers import load_cifar10

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.cpu_threads:
        import torch

        torch.set_num_threads(cfg.cpu_threads)
    spec = load_spec(cfg.study)
    data = load_cifar10(cfg.data)
    # Each worker its own seed, or they would all propose the same candidates.
    base_seed = cfg.seed if cfg.seed is not None else spec.sampler.get("seed")
    seed = None if base_seed is None else base_seed + cfg.worker
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage_url),
                              sampler=make_sampler(spec, seed=seed), pruner=make_pruner(spec))
    lock = StartLock(cfg.storage_url, cfg.study_name)
    objective = Objective(cfg, spec, data, on_start=lock.release)
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    parent = os.getppid()
    ran = 0
    outage_since: float | None = None
    while deadline is None or time.monotonic() < deadline:
        if cfg.stop_with_parent and os.getppid() != parent:
            log(cfg, "the search command that started this worker is gone; stopping")
            break
        try:
            step = _next_trial(study, objective, lock, cfg.n_trials)
        except Exception as err:
            if not _store_failure(err):
                raise
            # The store went away (a database restart): wait for it rather than die.
            # The trial it interrupted stays RUNNING, loses its heartbeat, and is
            # failed and queued again once the store is back.
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > STORE_OUTAGE_S:
                raise
            log(cfg, f"store unreachable ({type(err).__name__}); retrying in {POLL_S:g} s")
            time.sleep(POLL_S)
            continue
        outage_since = None
        if step == "done":
            break
        if step == "wait":
            time.sleep(POLL_S)
            continue
        ran += 1
    return ran


def _next_trial(study: optuna.Study, objective: Objective, lock: Any, n_trials: int) -> str:
    """Run one trial ("ran"), or say that the study is "done" or that others must end first
    ("wait": trials still running could yet fail and be queued again)."""
    from optuna.storages import fail_stale_trials

    lock.acquire()
    try:
        # A dead worker's trial turns FAIL once its heartbeat is stale, and the retry
        # callback queues its parameters again; normally the next trial start does
        # this, but a worker that only waits must do it too.
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and the only way
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        done, running = count_finished(study)
        if done >= n_trials:
            return "done"
        if done + running >= n_trials:
            return "wait"
        study.optimize(objective, n_trials=1, catch=(TrialFailure,), gc_after_trial=True)
        return "ran"
    finally:
        lock.release()


def _store_failure(err: BaseException) -> bool:
    """The store's fault: a database error, or any error raised while handling one (Optuna
    may fail in its own error handling when the database is gone)."""
    seen: BaseException | None = err
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, STORE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def log(cfg: WorkerConfig, message: str) -> None:
    print(f"worker {cfg.worker} (pid {os.getpid()}): {message}", file=sys.stderr, flush=True)


def worker_main(cfg: WorkerConfig) -> None:
    """Process entry point for the local executor: an exit code the driver reports (the
    traceback, if any, goes to the worker's stderr)."""
    try:
        run_worker(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # reported by the driver; the worker's detail goes to stderr
        traceback.print_exc()
        log(cfg, str(err))
        sys.exit(1)
