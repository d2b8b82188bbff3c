"""Trained models back from disk, and what they say about a set of images.

A promoted run folder holds ``model.pt`` (a bare ``state_dict``, loadable with
``torch.load(weights_only=True)``) beside ``config.json`` (the architecture and
the recipe); a ``checkpoint.pt`` carries both configs itself. `load_model` takes
either, so `search evaluate` and `search predict` work on a run folder, on one of
its files, or on a checkpoint copied elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import ArchConfig, ConfigError, build_model
from trainers.config import TrainConfig
from trainers.data import CLASSES
from trainers.rundir import CHECKPOINT, CONFIG, MODEL, CheckpointError, read_config
from trainers.safeio import atomic_writer

EVAL_BATCH = 1000  # images per forward pass when predicting


@dataclass
class LoadedModel:
    """A model ready to predict, with the configs it was trained with."""

    model: nn.Module
    arch: ArchConfig
    train: TrainConfig | None  # None when only the architecture is known
    source: Path  # the weights file it came from
    device: torch.device


def save_model(model: nn.Module, path: Path) -> None:
    """Write ``model``'s weights as a bare state_dict (atomically)."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    with atomic_writer(path) as f:
        torch.save(state, f)


def load_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a run folder, a ``model.pt`` (with ``config.json`` beside it) or a checkpoint.

    Raises:
        CheckpointError: nothing loadable there, unreadable files, or weights that
            do not fit the architecture the configs describe.
    """
    path = Path(path).expanduser()
    dev = torch.device(device)
    if path.is_dir():
        if (path / MODEL).exists():
            path = path / MODEL
        elif (path / CHECKPOINT).exists():
            path = path / CHECKPOINT
        else:
            raise CheckpointError(f"{path}: holds neither {MODEL} nor {CHECKPOINT}")
    elif not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    state = _read_weights(path)
    if "format" in state and "arch" in state:  # a training checkpoint
        arch = _arch(state["arch"], path)
        train = _train(state.get("train"), path)
        ema = state.get("ema")
        if isinstance(ema, dict) and "model" in ema and "updates" in ema:
            ema = ema["model"]  # `ModelEma.state_dict`; the release before stored it bare
        # The weights the run evaluates: the average, unless its recipe said the raw ones.
        weights = ema if ema is not None and (train is None or train.ema_eval) \
            else state["model"]
    else:
        config = read_config(path.parent)
        arch = _arch(config.get("arch"), path.parent / CONFIG)
        train = _train(config.get("train"), path.parent / CONFIG)
        weights = state
    model = build_model(arch)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        detail = (lines[0] if lines else str(err))[:200]
        raise CheckpointError(f"{path}: the weights do not fit the architecture "
                              f"{arch.describe()} ({detail})") from None
    return LoadedModel(model.to(dev).eval(), arch, train, path, dev)


def _read_weights(path: Path) -> dict[str, Any]:
    """A checkpoint dict or a bare state_dict, whichever the file holds."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: unreadable weights ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds neither a state_dict nor a checkpoint")
    return state


def _arch(raw: Any, where: Path) -> ArchConfig:
    try:
        return ArchConfig.from_dict(raw)
    except ConfigError as err:
        raise CheckpointError(f"{where}: bad architecture: {err}") from None


def _train(raw: Any, where: Path) -> TrainConfig | None:
    if raw is None:
        return None
    try:
        return TrainConfig.from_dict(raw)
    except ConfigError as err:
        raise CheckpointError(f"{where}: bad recipe: {err}") from None


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, *, tta_flip: bool,
                   tta_translate: int = 0, device: torch.device | str = "cpu",
                   batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Float32 logits (N x classes) for uint8 N x 32 x 32 x 3 images."""
    from trainers.augment import normalize, tta_logits
    from trainers.training import _autocast

    dev = torch.device(device)
    model.eval()
    data = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    out = []
    for start in range(0, len(data), batch_size):
        x = normalize(data[start:start + batch_size].to(dev))
        with _autocast(dev):
            logits = tta_logits(model, x, flip=tta_flip, translate=tta_translate)
        out.append(logits)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class ClassReport:
    """Accuracy overall and per class, and the confusion matrix (rows: true class)."""

    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray  # int64, classes x classes; [true, predicted]
    classes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "per_class": self.per_class,
                "confusion": self.confusion.tolist(), "classes": list(self.classes)}


def class_report(labels: np.ndarray, predictions: np.ndarray,
                 classes: tuple[str, ...] = CLASSES) -> ClassReport:
    """Compare integer ``predictions`` with ``labels``."""
    k = len(classes)
    confusion = np.bincount(labels.astype(np.int64) * k + predictions.astype(np.int64),
                            minlength=k * k).reshape(k, k)
    totals = confusion.sum(axis=1)
    per_class = {name: float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
                 for i, name in enumerate(classes)}
    accuracy = float(np.trace(confusion) / max(1, len(labels)))
    return ClassReport(accuracy, per_class, confusion, tuple(classes))
