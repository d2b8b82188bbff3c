"""Checkpoints that are safe to load and safe to lose.

Written atomically (temp file, fsync, `os.replace`) with the previous one kept as
``checkpoint.prev.pt``; read with ``torch.load(weights_only=True)``, so a
checkpoint cannot run code. A latest checkpoint that cannot be read (a crash
while copying it, a truncated disk) falls back to the previous one, and says so.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.rundir import CHECKPOINT, CHECKPOINTS, PREV_CHECKPOINT, CheckpointError
from trainers.safeio import atomic_writer

FORMAT = 1
PACKAGES = ("models", "space", "trainers", "search")


def code_version() -> str:
    """Package version plus a hash of the project's Python sources.

    Works in an installed tree without git, and changes with any code change.
    """
    try:
        version = metadata.version("resnet-budget-search")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{version}+src.{digest.hexdigest()[:12]}"


def rng_state(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch, cuda), plus ``extra`` states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's tuple holds an ndarray, which weights_only loading refuses.
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state.update(extra or {})
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by `rng_state`."""
    random.setstate(as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def as_tuples(value: Any) -> Any:
    """Lists back to tuples, as `random.Random.setstate` wants them."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(v) for v in value)
    return value


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` as ``directory/checkpoint.pt``; the old one becomes the previous."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT
    if path.exists():
        # A crash from here on leaves the previous one, which loading falls back to.
        os.replace(path, directory / PREV_CHECKPOINT)
    with atomic_writer(path) as f:
        torch.save({"format": FORMAT, **state}, f)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the renames themselves must reach the disk
    finally:
        os.close(dir_fd)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint file safely; `CheckpointError` if it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this tool (format {FORMAT})")
    return state


def load_latest(directory: Path, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The newest readable checkpoint in ``directory``, or None if there is none.

    Raises:
        CheckpointError: checkpoints exist but none can be read.
    """
    candidates = [directory / name for name in CHECKPOINTS]  # newest first
    existing = [p for p in candidates if p.exists()]
    if not existing:
        return None
    errors = []
    for path in existing:
        try:
            state = read_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            log(f"warning: {errors[-1]}; falling back to {path.name}")
        return state
    raise CheckpointError("; ".join(errors))
