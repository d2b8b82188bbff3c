"""The Python API, for notebooks: the functions the ``search`` command runs.

    from search import api

    study = api.run("smoke", n_trials=4, executor="local")   # a search
    for trial in api.best("smoke"):                         # its best trials
        print(trial.number, trial.value, trial.user_attrs["arch_summary"])
    run_dir = api.promote(study.best_trial.number, "smoke")  # the full recipe
    run = api.load(run_dir)                                 # nn.Module in eval mode + configs
    labels = api.predict(run, images)                       # uint8 N x 32 x 32 x 3 -> N

Each takes the command's options as keyword arguments, with the same defaults, and
prints the same lines (``out=None`` keeps a notebook cell quiet). A problem the
command reports in one line with exit code 2 raises here: `Error` covers them all
(`UsageError`, `SpecError`, `StorageError`, `PromoteError`, `DataError`,
`CheckpointError`, `ConfigError`), and the message is the line the command prints.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from search.args import UsageError

if TYPE_CHECKING:
    import numpy as np
    import optuna
    from torch import nn

    from models import ArchConfig
    from trainers.config import TrainConfig


class Error(Exception):
    """Bad input or a state the command refuses; ``str(err)`` is its one-line message."""


def _errors() -> tuple[type[BaseException], ...]:
    from models import ConfigError
    from search.executors import PlacementError, RayUnavailable
    from search.results.report import ReportError
    from search.results.trial_configs import PromoteError
    from search.storage import StorageError
    from space import SpecError
    from trainers.rundir import CheckpointError
    from trainers.safeio import DataError

    return (SpecError, DataError, StorageError, UsageError, PromoteError, ReportError,
            CheckpointError, ConfigError, RayUnavailable, PlacementError)


def _call(function: Any, *args: Any) -> Any:
    """``function(*args)``, its command-level errors raised as `Error` (the original is
    the cause)."""
    try:
        return function(*args)
    except _errors() as err:
        raise Error(str(err)) from err


def _out(out: TextIO | None) -> TextIO:
    return io.StringIO() if out is None else out


def run(study: str = "resnet-budget", *, out: TextIO | None = sys.stdout,
        **options: Any) -> optuna.Study:
    """`search run`: search ``study`` (a built-in name or a study file) and return the
    Optuna study. ``options``: `search.run.RunOptions` fields (``n_trials``, ``storage``,
    ``study_name``, ``workers``, ``executor`` ("ray", "local", "inline"), ``data``,
    ``device``, ``seed``, ``timeout``, ``tensorboard``, ...).

    Raises:
        Error: the study file, data or store cannot be used, or the search stopped on a
            failure (the message says which).
        KeyboardInterrupt: interrupted; finished trials are kept in the store.
    """
    from search.run import RunOptions, run_search

    if options.get("tensorboard"):
        from search.cli import tensorboard_ready

        _call(tensorboard_ready, options["tensorboard"])
    opts = _call(lambda: RunOptions(study=study, **options))
    code = _call(run_search, opts, _out(out))
    if code != 0:
        raise Error(f"search run stopped with exit code {code}")
    return open_study(study, storage=options.get("storage"),
                      study_name=options.get("study_name"))


def open_study(study: str = "resnet-budget", *, storage: str | None = None,
               study_name: str | None = None) -> optuna.Study:
    """The Optuna study of ``study`` in its store (as `search trials` finds it)."""
    import argparse

    from search.args import study_from_store

    args = argparse.Namespace(study=study, storage=storage, study_name=study_name)
    found: optuna.Study = _call(study_from_store, args)
    return found


def best(study: str = "resnet-budget", *, top: int = 10, storage: str | None = None,
         study_name: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """`search best`: the ``top`` complete trials, best first; for a multi-objective
    study its Pareto front, most accurate first.

    Raises:
        Error: no such study, or no complete trial yet.
    """
    from search import record

    found = open_study(study, storage=storage, study_name=study_name)
    trials = found.get_trials(deepcopy=False)
    chosen = (record.pareto_front(trials)[:top] if len(found.directions) > 1
              else record.best(trials, top))
    if not chosen:
        raise Error(f"study {study!r} has no complete trial yet")
    return chosen


def promote(trial: int, study: str = "resnet-budget", *, out: TextIO | None = sys.stdout,
            **options: Any) -> Path:
    """`search promote`: train trial ``trial`` with the study's ``[final]`` recipe (or
    resume it); the run folder. ``options``: `search.results.promote.PromoteOptions`
    fields (``epochs``, ``storage``, ``study_name``, ``data``, ``device``, ``out``
    (the run folder), ``restart``, ``fold``, ``teachers``, ``tensorboard``, ...).
    """
    from search.results.promote import PromoteOptions, promote_run

    opts = _call(lambda: PromoteOptions(trial=trial, study=study, **options))
    folder: Path = _call(promote_run, opts, _out(out))
    return folder


@dataclass
class Run:
    """A trained run, ready to predict."""

    model: nn.Module  # in eval mode, on ``device``
    arch: ArchConfig
    train: TrainConfig | None  # None when only the architecture is known
    path: Path  # the weights file (model.pt or a checkpoint)
    config: dict[str, Any]  # the run folder's config.json ({} without one)
    summary: dict[str, Any] | None  # its summary.json, once the run has finished

    @property
    def tta(self) -> dict[str, Any]:
        """The run's test-time augmentation (what `predict` applies)."""
        if self.train is None:
            return {"tta_flip": False}
        return {"tta_flip": self.train.tta_flip, "tta_translate": self.train.tta_translate}


def load(run: str | Path, *, device: str | None = None) -> Run:
    """A run folder, its model.pt or a checkpoint, as a `Run` (model in eval mode).

    Raises:
        Error: nothing loadable there, or weights that do not fit the architecture.
    """
    import json

    from trainers import rundir
    from trainers.inference import load_model
    from trainers.training import resolve_device

    loaded = _call(load_model, Path(run), resolve_device(device))
    folder = rundir.folder_of(Path(loaded.source))
    try:
        config = rundir.read_config(folder)
    except ValueError:
        config = {}
    summary_path = folder / rundir.SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(loaded.model, loaded.arch, loaded.train, Path(loaded.source), config, summary)


def predict_proba(run: Run | str | Path, images: np.ndarray, *,
                  device: str | None = None) -> np.ndarray:
    """Class probabilities (N x 10, float32) of uint8 N x 32 x 32 x 3 images (the CIFAR
    layout), with the run's test-time augmentation."""
    import numpy as np

    from search.results.ensemble import softmax
    from trainers.inference import predict_logits

    loaded = run if isinstance(run, Run) else load(run, device=device)
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (32, 32, 3):
        raise Error(f"images must be uint8 N x 32 x 32 x 3, got {array.dtype} "
                    f"{tuple(array.shape)}")
    dev = next(loaded.model.parameters()).device
    return softmax(predict_logits(loaded.model, array, device=dev, **loaded.tta))


def predict(run: Run | str | Path, images: np.ndarray, *,
            device: str | None = None) -> np.ndarray:
    """Class indices (N, int64) of uint8 N x 32 x 32 x 3 images; `trainers.CLASSES`
    names them."""
    return predict_proba(run, images, device=device).argmax(1)


__all__ = ["Error", "Run", "best", "load", "open_study", "predict", "predict_proba",
           "promote", "run"]
