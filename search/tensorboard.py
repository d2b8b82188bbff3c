"""TensorBoard event files for trials and promoted runs (``--tensorboard DIR``).

Each trial writes ``DIR/<study>/trial-<N>/`` and each promoted run
``DIR/<study>/final-<run folder>/``: per-epoch scalars (``loss/train``, ``loss/val``,
``accuracy/train``, ``accuracy/val``, ``lr``, ``images_per_s``) and, when it ends, its
hyperparameters and final metrics through the HParams plugin, so that TensorBoard's
HParams tab compares trials side by side. ``tensorboard`` is an optional extra
(``pip install 'resnet-budget-search[tensorboard]'``); nothing else imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXTRA = "pip install 'resnet-budget-search[tensorboard]'"
SCALARS = {  # metric -> tag
    "train_loss": "loss/train", "val_loss": "loss/val",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val",
    "lr": "lr", "images_per_s": "images_per_s",
}


class TensorBoardMissing(RuntimeError):
    """``--tensorboard`` without the tensorboard package."""


def check_available() -> None:
    """`TensorBoardMissing` unless ``torch.utils.tensorboard`` can write event files."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TensorBoardMissing(f"--tensorboard needs the tensorboard package: {EXTRA}") \
            from None


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of ``a.b.0.c`` keys with scalar values (what the
    HParams plugin takes); None and empty values left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out.update(flat({str(i): v for i, v in enumerate(value)}, f"{name}."))
        elif isinstance(value, (bool, int, float, str)) and value != "":
            out[name] = value
    return out


class Board:
    """The event files of one trial or run.

    Args:
        root: the ``--tensorboard`` folder.
        study: the study's name (a folder level).
        name: ``trial-17``, ``final-trial-17``, ...
    """

    def __init__(self, root: str | Path, study: str, name: str) -> None:
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(root) / study / name
        self.writer = SummaryWriter(log_dir=str(self.path))
        self.closed = False

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for key, tag in SCALARS.items():
            value = metrics.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()

    def close(self, hparams: Mapping[str, Any], results: Mapping[str, float | None]) -> None:
        """The run's hyperparameters and final metrics (``hparam/<name>``), once."""
        if self.closed:
            return
        self.closed = True
        metrics = {f"hparam/{k}": float(v) for k, v in results.items()
                   if v is not None and math.isfinite(v)}
        self.writer.add_hparams(dict(hparams), metrics, run_name=".")
        self.writer.close()


def trial_hparams(params: Mapping[str, Any], n_params: int | None,
                  train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A trial's sampled parameters (``stages``, ``stage2_width``, ``lr``, ...) and its
    size; with ``train``, the recipe's values the study fixed too."""
    out = flat(params)
    if train is not None:
        out.update({f"train.{k}": v for k, v in flat(train).items() if k not in params})
    if n_params is not None:
        out["n_params"] = n_params
    return out
