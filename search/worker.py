"""One search worker: trials of a study, one after another, on one device.

Every executor runs this same function (in a Ray task, a subprocess or the
calling process). It loads the study file and the data itself, opens its own
connection to the store and calls ``study.optimize`` one trial at a time, which
keeps Optuna's heartbeat working, until the study has ``n_trials`` finished
trials.

Failures are told apart. A trial's own failure (divergence, out of memory, a
data error) is FAIL with ``fail_reason``, counts as finished, and the worker goes
on. Any other exception is a bug in the code: the trial is FAIL with the
traceback in the worker's log, it does not count, and after `MAX_BUGS` such
trials in a row the worker stops with `TrainerBug` (and the search with it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy

from search import record

if TYPE_CHECKING:
    from trainers.protocol import Trainer

POLL_S = 5.0  # seconds between looks at the store while waiting for other workers


def wait_s() -> float:
    """`POLL_S`, or ``$SEARCH_POLL_S`` where set (tests shorten every wait with it)."""
    from search.executors.base import POLL_ENV, poll_s

    return poll_s() if os.environ.get(POLL_ENV, "").strip() else POLL_S
STORE_OUTAGE_S = 600.0  # how long a worker waits for an unreachable store before giving up
MAX_BUGS = 3  # trials in a row failed by a bug before the worker stops
MAX_EXHAUSTED = 3  # trials in a row for which the sampler found nothing within the budget
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
    trainer: Trainer | None = None  # None: trainers.fit; must pickle (a module-level function)
    cpu_threads: int | None = None  # torch threads on CPU, so workers share the cores
    gpus: float = 0.0  # GPUs the worker holds (Ray)
    cpus: float = 1.0  # CPU share the worker holds (Ray)
    log_dir: str | None = None  # where tracebacks of bugs go (worker-<i>.log); None: stderr only
    stop_with_parent: bool = False  # a local subprocess: stop when the driver dies
    tensorboard: str | None = None  # event files per trial under <this>/<study>/trial-N


class TrialFailure(Exception):
    """A trial that failed on its own (divergence, out of memory, bad data).

    The reason is on the trial as ``fail_reason``; the worker goes on.
    """


class TrainerBug(RuntimeError):
    """`MAX_BUGS` trials in a row failed with an exception that is not the trial's own."""


class NothingFits(RuntimeError):
    """The budget-aware sampler found no proposal within the budget for `MAX_EXHAUSTED`
    trials in a row: a search would only prune (`search run` refuses a space where
    nothing fits at all before it starts; this catches one where hardly anything does)."""


def own_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that are a trial's own failure, not a bug."""
    import torch

    from trainers import DataError, TrainingDiverged

    return (TrainingDiverged, torch.OutOfMemoryError, DataError)


class Objective:
    """Samples a candidate, trains it, reports each epoch to the pruner."""

    def __init__(self, cfg: WorkerConfig, spec: Any, data: Any,
                 on_start: Callable[[], None] = lambda: None,
                 budgets: list[Any] | None = None) -> None:
        from trainers.protocol import default_trainer

        self.cfg, self.spec, self.data = cfg, spec, data
        self.budgets = budgets if budgets is not None else spec.budgets()
        self.trainer: Trainer = cfg.trainer or default_trainer()
        self.host = socket.gethostname()
        self.on_start = on_start  # called once the trial exists in the store
        self.own = own_failures()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.on_start()
        try:
            return self._run(trial)
        except (TrialFailure, optuna.TrialPruned):
            raise
        except self.own as err:
            reason = record.failure_reason(err)
            record.write_failure(trial, reason)
            import torch

            if isinstance(err, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            raise TrialFailure(reason) from err
        except Exception as err:
            if not _store_failure(err):  # a bug: say where its traceback is, then raise
                where = self.log_bug(trial.number, err)
                trial.set_user_attr(record.ERROR, f"{record.failure_reason(err)} "
                                                  f"(traceback: {where})"[:record.MAX_REASON])
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        import torch

        from space import OverBudget

        try:
            candidate = self.spec.sample(trial, self.budgets)
        except OverBudget as err:  # pruned before anything trains
            record.write_attrs(trial, record.rejected_attrs(err))
            record.write_constraints(trial, self.budgets, err.costs)
            raise
        record.write_constraints(trial, self.budgets, candidate.costs)
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        record.write_attrs(trial, record.candidate_attrs(
            candidate, device=torch.cuda.get_device_name() if device == "cuda" else device,
            host=self.host, worker=self.cfg.worker, pid=os.getpid(),
            data_source=self.data.source))
        record.write_configs(trial, candidate)

        multi = self.spec.multi_objective
        board = None
        if self.cfg.tensorboard:
            from search.tensorboard import Board

            board = Board(self.cfg.tensorboard, self.cfg.study_name, f"trial-{trial.number}")
        history: list[dict[str, float]] = []

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            history.append(metrics)
            if board is not None:
                board.epoch(epoch, metrics)
            # Optuna cannot prune a multi-objective trial: it trains to the end.
            record.report_epoch(trial, epoch, metrics, multi=multi)
            return False if multi else trial.should_prune()

        outcome = "failed"
        try:
            result = self.trainer(candidate.arch, candidate.train, self.data, device=device,
                                  report=report, log=lambda _: None)
            outcome = (f"pruned after epoch {result.epochs}" if result.stopped else
                       f"{record.OBJECTIVE.metric} {result.val_acc:.4f} after "
                       f"{result.epochs} epochs")
        finally:
            self.note(trial, candidate, history, outcome)
            if board is not None:
                from search.tensorboard import trial_hparams

                last = history[-1] if history else {}
                board.close(trial_hparams(trial.params, candidate.n_params),
                            {"val_acc": last.get("val_acc"), "epochs": float(len(history)),
                             "best_val_acc": max((h["val_acc"] for h in history),
                                                 default=None)})
        if result.stopped:
            raise optuna.TrialPruned(f"pruned after epoch {result.epochs}")
        if multi:
            return record.objective_values(float(result.val_acc), candidate,
                                           self.spec.objectives)
        return float(result.val_acc)

    def note(self, trial: optuna.Trial, candidate: Any, history: list[dict[str, float]],
             outcome: str) -> None:
        """The trial's note in optuna-dashboard; a store that refuses it only warns."""
        from search.dashboard import save_trial_note, trial_note

        try:
            save_trial_note(trial, trial_note(trial.number, candidate, self.spec.budget,
                                              history, outcome))
        except STORE_ERRORS as err:
            log(self.cfg, f"trial {trial.number}: its note was not saved: {err}")

    def log_bug(self, number: int, err: BaseException) -> str:
        """Append the traceback to the worker's log file (Optuna prints it on stderr too);
        where it is, for the messages."""
        if self.cfg.log_dir is not None:
            text = (f"--- trial {number}, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                    f"pid {os.getpid()}\n" + "".join(traceback.format_exception(err)))
            path = log_file(self.cfg)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as f:
                    f.write(text)
            except OSError as failed:
                log(self.cfg, f"cannot write {path}: {failed}")
                return f"the stderr of worker {self.cfg.worker} on {self.host}"
        return log_place(self.cfg, self.host)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def log_file(cfg: WorkerConfig) -> Path:
    return Path(cfg.log_dir or ".") / f"worker-{cfg.worker}.log"


def log_place(cfg: WorkerConfig, host: str) -> str:
    """Where a worker's tracebacks are, in words."""
    if cfg.log_dir is None:
        return f"the stderr of worker {cfg.worker} on {host}"
    return f"{log_file(cfg)} on {host}"


def run_worker(cfg: WorkerConfig) -> int:
    """Run trials until the study has ``cfg.n_trials`` finished ones; return how many ran here.

    Raises:
        SpecError, DataError, StorageError: the study file, the data or the store
            cannot be used at all (no trial is started).
        TrainerBug: `MAX_BUGS` trials in a row failed with a bug.
    """
    from search.storage import StartLock, open_storage
    from space import SpecError, load_spec, make_pruner, make_sampler
    from space.budgets import make_budgets
    from trainers import load_cifar10

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # failures with their tracebacks
    quiet_interrupts()
    if cfg.cpu_threads:
        import torch

        torch.set_num_threads(cfg.cpu_threads)
    spec = load_spec(cfg.study)
    try:
        device = cfg.device or ("cuda" if _cuda() else "cpu")
        budgets, meters = make_budgets(spec.limits, device)
    except ValueError as err:
        raise SpecError(f"{spec.source}: study: {err}") from None
    data = load_cifar10(cfg.data)
    storage = open_storage(cfg.storage_url)
    base_seed = cfg.seed if cfg.seed is not None else spec.sampler.get("seed")
    seed = None if base_seed is None else sampler_seed(
        base_seed, cfg.worker, len(storage.get_all_trials(
            storage.get_study_id_from_name(cfg.study_name), deepcopy=False)))
    study = optuna.load_study(study_name=cfg.study_name, storage=storage,
                              sampler=make_sampler(spec, seed=seed, budgets=budgets),
                              pruner=make_pruner(spec))
    for meter in meters:  # measured latency and memory: once per architecture, in the store
        meter.bind(study)
    lock = StartLock(cfg.storage_url, cfg.study_name)
    objective = Objective(cfg, spec, data, on_start=lock.release, budgets=budgets)
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    parent = os.getppid()
    ran = bugs = 0
    outage_since: float | None = None
    while deadline is None or time.monotonic() < deadline:
        if cfg.stop_with_parent and os.getppid() != parent:
            log(cfg, "the search command that started this worker is gone; stopping")
            break
        try:
            step = _next_trial(study, objective, lock, cfg.n_trials)
        except Exception as err:
            if not _store_failure(err):
                bugs += 1
                if bugs >= MAX_BUGS:
                    raise TrainerBug(
                        f"{bugs} trials in a row failed with an error in the code, not in the "
                        f"trial: {record.failure_reason(err)}; tracebacks in "
                        f"{log_place(cfg, objective.host)}"
                    ) from err
                continue
            # The store went away (a database restart): wait for it rather than die.
            # The trial it interrupted stays RUNNING, loses its heartbeat, and is
            # failed and queued again once the store is back.
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > STORE_OUTAGE_S:
                raise
            log(cfg, f"store unreachable ({type(err).__name__}); retrying in {wait_s():g} s")
            time.sleep(wait_s())
            continue
        outage_since = None
        if step == "done":
            break
        if step == "wait":
            time.sleep(wait_s())
            continue
        ran += 1
        bugs = 0
        if getattr(study.sampler, "exhausted_in_a_row", 0) >= MAX_EXHAUSTED:
            raise NothingFits(
                f"the sampler found no architecture within the budget of {spec.budget:,} "
                f"parameters for {MAX_EXHAUSTED} trials in a row: allow smaller networks in "
                "the study file's [arch] or raise study.budget")
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
        done, running = record.count_finished(study.get_trials(deepcopy=False))
        if done >= n_trials:
            return "done"
        if done + running >= n_trials:
            return "wait"
        study.optimize(objective, n_trials=1, catch=(TrialFailure,), gc_after_trial=True)
        return "ran"
    finally:
        lock.release()


def sampler_seed(seed: int, worker: int, trials: int) -> int:
    """The sampler seed of worker ``worker`` of a run with ``seed``, in a study that holds
    ``trials`` trials already.

    Each worker its own seed, or they would all propose the same candidates; and a
    resumed study a new one, or its sampler would propose the first run's candidates
    again. A new study keeps ``seed + worker``, so that a seeded search repeats.
    """
    if trials == 0:
        return seed + worker
    import hashlib

    digest = hashlib.sha256(f"{seed}/{worker}/{trials}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class _NoInterruptTraceback(logging.Filter):
    """Drops Optuna's "Trial N failed" warning for an interrupted trial: its traceback
    (70 lines deep in the trainer) is no news after Ctrl-C, which says it in one line."""

    def filter(self, rec: logging.LogRecord) -> bool:
        return not (rec.exc_info and isinstance(rec.exc_info[1], KeyboardInterrupt))


def quiet_interrupts() -> None:
    """Install `_NoInterruptTraceback` on Optuna's log handlers (once)."""
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())


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


def _stop_once(signum: int, frame: Any) -> None:
    """The driver's SIGTERM: an interrupt, so that Optuna marks the running trial FAIL;
    later ones are ignored, so that nothing interrupts that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def worker_main(cfg: WorkerConfig) -> None:
    """Process entry point for the local executor: an exit code the driver reports (the
    traceback, if any, goes to the worker's stderr).

    The driver stops a worker with SIGTERM; the worker starts with SIGINT ignored,
    so that a terminal's Ctrl-C, sent to every process of the command, reaches the
    driver only, and the worker is interrupted once, not twice.
    """
    signal.signal(signal.SIGTERM, _stop_once)
    try:
        run_worker(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except (TrainerBug, NothingFits) as err:  # tracebacks, if any, are in the log already
        log(cfg, str(err))
        sys.exit(1)
    except Exception as err:  # reported by the driver; the worker's detail goes to stderr
        traceback.print_exc()
        log(cfg, str(err))
        sys.exit(1)
