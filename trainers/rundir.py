"""The run folder: the one place that names its files and writes and reads them.

A run folder (``runs/<study>/trial-<N>/``, written by `search promote`) holds::

    config.json          both configs, seed, code version, data source, trial, store
    checkpoint.pt        the last epoch's training state (checkpoint.prev.pt: the one before)
    model.pt             the evaluated weights, a bare state_dict
    metrics.csv          one row per epoch, columns `METRIC_COLUMNS`
    curves.png           loss and accuracy against epochs
    confusion.png        the test set's confusion matrix
    summary.json         test accuracy overall and per class, size, time, device
    eval-<data>/         `search evaluate`: evaluation.json and confusion.png
    promote.lock         who trains into the folder (pid, host, start); see `locked`
    teacher-probs.pt     `promote --teacher-cache`: the teachers' outputs, computed once

and a study's report (``runs/<study>/``) ``pareto.png`` and ``report.md``.

Every file is written atomically (complete or not at all), and the formats are
those of release 0.1, whose run folders must keep loading. Torch-free: the
weights files are written and read by `trainers.checkpoint` and
`trainers.inference`, which take their names from here.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainers.safeio import PathLike, atomic_writer

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
PREV_CHECKPOINT = "checkpoint.prev.pt"
MODEL = "model.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"
CONFUSION = "confusion.png"  # in the run folder and in each eval-<data>/ folder
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"
EVAL_PREFIX = "eval-"
PARETO = "pareto.png"  # a study's report
REPORT = "report.md"
LOCK = "promote.lock"
TEACHER_CACHE = "teacher-probs.pt"
# promote checkpoints after every CHECKPOINT_EVERY epochs or CHECKPOINT_MINUTES minutes,
# whichever comes first: a crash loses at most that long plus an epoch. On a GPU an epoch of
# a 5M network takes seconds, and a checkpoint per epoch (a device-to-host copy and two
# fsyncs) would cost several percent of the run; on a CPU every epoch outlasts the minutes.
CHECKPOINT_EVERY = 10
CHECKPOINT_MINUTES = 1.5
ENSEMBLES = "ensembles"  # runs/ensembles/<digest>/: an ensemble's evaluations

OUTPUTS = (CONFIG, MODEL, METRICS, CURVES, CONFUSION, SUMMARY)  # what a finished run holds
CHECKPOINTS = (CHECKPOINT, PREV_CHECKPOINT)
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                  "images_per_s")


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be used: unreadable, or for another run."""


class RunFolderLocked(CheckpointError):
    """Another live process holds the run folder's lock; ``holder`` says who, if known."""

    def __init__(self, folder: Path, holder: dict[str, Any]) -> None:
        self.folder, self.holder = folder, holder
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since "
               f"{holder.get('started')}" if holder.get("pid") else "holder unknown")
        what = holder.get("what") or "another command"
        super().__init__(f"{folder}: in use by {what} ({who})")


# -- the lock ----------------------------------------------------------------------------


@contextlib.contextmanager
def locked(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, or raise `RunFolderLocked` naming its holder.

    An advisory ``flock`` on ``folder/promote.lock``, which then names this process.
    The kernel drops the lock when its process ends, however it ends, so the file a
    killed run leaves behind blocks nobody; the file itself stays.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderLocked(folder, _holder(path)) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path, wait_s: float = 2.0) -> dict[str, Any]:
    """What the lock's holder wrote into it (it writes just after taking the lock)."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(path.read_text())
            if isinstance(holder, dict):
                return holder
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.05)


# -- locations ---------------------------------------------------------------------------


def trial_dir(runs: Path, study: str, trial: int, fold: tuple[int, int] | None = None,
              distilled: bool = False) -> Path:
    """Where `search promote` trains trial ``trial`` of ``study`` by default
    (``trial-3``, ``trial-3-fold2of5``, ``trial-3-distilled``)."""
    name = f"trial-{trial}" + (f"-fold{fold[0]}of{fold[1]}" if fold else "")
    return runs / study / (name + ("-distilled" if distilled else ""))


def folder_of(path: Path) -> Path:
    """The run folder of a run folder, or of one of its files."""
    return path if path.is_dir() else path.parent


def eval_dir(run: Path, data_source: PathLike) -> Path:
    """``run/eval-<data set name>/``: where `search evaluate` writes by default."""
    name = Path(data_source).name
    for suffix in (".tar.gz", ".tgz", ".tar", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return run / f"{EVAL_PREFIX}{name or 'data'}"


# -- writers -----------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes) -> Path:
    """``data`` at ``path``, complete or not at all."""
    with atomic_writer(path) as f:
        f.write(data)
    return path


def write_json(path: Path, obj: Mapping[str, Any]) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_config(folder: Path, config: Mapping[str, Any]) -> Path:
    return write_json(folder / CONFIG, config)


def write_summary(folder: Path, summary: Mapping[str, Any]) -> Path:
    return write_json(folder / SUMMARY, summary)


def write_evaluation(folder: Path, evaluation: Mapping[str, Any]) -> Path:
    return write_json(folder / EVALUATION, evaluation)


def write_metrics(folder: Path, history: Sequence[Mapping[str, float]]) -> Path:
    """One row per epoch, columns `METRIC_COLUMNS` (extra keys are left out)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: int(row[k]) if k == "epoch" else f"{row[k]:.6g}"
                         for k in METRIC_COLUMNS})
    return write_bytes(folder / METRICS, text.getvalue().encode())


def discard(folder: Path) -> list[str]:
    """Remove the checkpoints and outputs of an earlier run; the names removed."""
    removed = [name for name in CHECKPOINTS + OUTPUTS + (TEACHER_CACHE,)
               if (folder / name).exists()]
    for name in removed:
        (folder / name).unlink()
    return removed


def read_outputs(folder: Path) -> dict[str, bytes]:
    """A finished run's `OUTPUTS` as bytes, to carry them to another machine."""
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def write_outputs(folder: Path, files: Mapping[str, bytes]) -> None:
    """The inverse of `read_outputs`; refuses names that are not `OUTPUTS`."""
    unknown = sorted(set(files) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"not outputs of a run folder: {unknown}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        write_bytes(folder / name, blob)


# -- readers -----------------------------------------------------------------------------


def read_config(folder: Path) -> dict[str, Any]:
    """A run folder's ``config.json``.

    Raises:
        CheckpointError: missing, unreadable or not a JSON object.
    """
    return _read_object(folder / CONFIG, missing=f"missing; a bare {MODEL} needs the {CONFIG} "
                        "of its run beside it", what="a run configuration")


def read_summary(folder: Path) -> dict[str, Any]:
    """A finished run's ``summary.json``; `CheckpointError` if missing or unreadable."""
    return _read_object(folder / SUMMARY, missing="missing; the run has not finished",
                        what="a run summary")


def read_metrics(folder: Path) -> list[dict[str, float]]:
    """A run's ``metrics.csv``: one dict per epoch, ``epoch`` as an int.

    Raises:
        CheckpointError: missing, unreadable, or a row that is not numbers.
    """
    path = folder / METRICS
    try:
        with path.open(newline="") as f:
            return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
                    for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None


def _read_object(path: Path, *, missing: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not {what} (a JSON object)")
    return obj
