"""Several trained runs as one: ensembles for `search evaluate` and `search predict`, and
the teachers of `search promote --teacher`.

An ensemble's probabilities are the weighted mean of its members' softmax outputs,
each member with its own test-time augmentation. An ensemble is a teacher, not a
submission: its parameters add up, and the output says when they pass the budget.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.args import UsageError
from trainers import rundir

DEFAULT_BUDGET = 5_000_000  # the course project's, where a run folder records none


@dataclass(frozen=True)
class Member:
    """One trained run of an ensemble (or a teacher)."""

    loaded: Any  # trainers.inference.LoadedModel
    sha256: str  # of its weights file
    n_params: int
    config: dict[str, Any]  # its config.json ({} when there is none)

    @property
    def folder(self) -> Path:
        return rundir.folder_of(Path(self.loaded.source))

    def tta(self) -> dict[str, Any]:
        """The run's test-time augmentation, as `predict_logits` keywords."""
        train = self.loaded.train
        if train is None:
            return {"tta_flip": False}
        return {"tta_flip": train.tta_flip, "tta_translate": train.tta_translate}

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.folder), "weights": str(self.loaded.source),
                "sha256": self.sha256, "arch": self.loaded.arch.describe(),
                "n_params": self.n_params}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_members(paths: Sequence[str], device: str) -> list[Member]:
    """Each run folder, model.pt or checkpoint, loaded for prediction.

    Raises:
        CheckpointError: one of them cannot be loaded or its weights do not fit the
            architecture its folder describes.
    """
    from models import count_params
    from trainers.inference import load_model

    members = []
    for path in paths:
        loaded = load_model(Path(path).expanduser(), device)
        try:
            config = rundir.read_config(rundir.folder_of(Path(loaded.source)))
        except ValueError:
            config = {}
        members.append(Member(loaded, sha256_file(Path(loaded.source)),
                              count_params(loaded.arch), config))
    return members


def parse_weights(text: str | None, n: int) -> list[float]:
    """``--weights 2,1,1`` as numbers, one per member; equal weights without it."""
    if text is None:
        return [1.0] * n
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights {text}: must be comma-separated numbers") from None
    if len(weights) != n:
        raise UsageError(f"--weights {text}: {len(weights)} weights for {n} models")
    if min(weights) < 0 or sum(weights) <= 0:
        raise UsageError(f"--weights {text}: must be >= 0 with a positive sum")
    return weights


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def member_probs(members: Sequence[Member], images: np.ndarray) -> list[np.ndarray]:
    """Each member's softmax (N x classes, float64) on uint8 N x 32 x 32 x 3 images."""
    from trainers.inference import predict_logits

    return [softmax(predict_logits(m.loaded.model, images, **m.tta(), device=m.loaded.device))
            for m in members]


def mean_probs(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' probabilities."""
    total = sum(weights)
    return sum(w / total * p for w, p in zip(weights, probs, strict=True))  # type: ignore[return-value]


def budget_of(members: Sequence[Member]) -> tuple[int, str]:
    """The parameter budget the members were searched under, and where it comes from."""
    recorded = [int(m.config["budget"]) for m in members
                if isinstance(m.config.get("budget"), int)]
    if recorded:
        return max(recorded), "the study's budget"
    return DEFAULT_BUDGET, "the default budget"


def budget_note(members: Sequence[Member]) -> tuple[int, int, str | None]:
    """(total parameters, budget, a warning when the total is over the budget)."""
    total = sum(m.n_params for m in members)
    budget, where = budget_of(members)
    if total <= budget:
        return total, budget, None
    return total, budget, (f"the ensemble has {total:,} parameters, over {where} of "
                           f"{budget:,}: use it as a teacher (search promote --teacher), "
                           "not as a submission under the budget")


def ensemble_folder(runs: Path, members: Sequence[Member]) -> Path:
    """``runs/ensembles/<digest>``: named by its members' weights, so the same set (in
    any order) lands in the same folder."""
    key = hashlib.sha256(",".join(sorted(m.sha256 for m in members)).encode()).hexdigest()
    return runs / rundir.ENSEMBLES / key[:12]


def check_teachers(members: Sequence[Member], data_digest: str) -> None:
    """Teachers must have learnt from the data the student trains on: each folder's
    recorded data digest must equal ``data_digest``.

    Raises:
        UsageError: a teacher of other data, or one that records none.
    """
    for m in members:
        digest = m.config.get("data_digest")
        if digest is None:
            raise UsageError(f"--teacher {m.folder}: its {rundir.CONFIG} records no data "
                             "digest; a teacher must be a run folder of `search promote`")
        if digest != data_digest:
            raise UsageError(f"--teacher {m.folder}: trained on other data (digest "
                             f"{str(digest)[:12]}..., the student's data is "
                             f"{data_digest[:12]}...)")


def load_teacher(paths: Sequence[str], weights: str | None, device: Any, data_digest: str,
                 cache: Path | None) -> tuple[Any, list[Member], list[float]]:
    """`search promote --teacher`: the runs as a `trainers.distill.Teacher` on ``device``.

    Raises:
        UsageError: bad weights, or a teacher of other data.
        CheckpointError: a teacher that cannot be loaded, or whose weights do not fit
            the architecture its folder describes.
    """
    from trainers.distill import Teacher

    factors = parse_weights(weights, len(paths))
    members = load_members(paths, str(device))
    check_teachers(members, data_digest)
    teacher = Teacher([m.loaded.model for m in members], factors,
                      [m.sha256 for m in members], cache)
    return teacher, members, factors


def teacher_scores(members: Sequence[Member], weights: Sequence[float], images: np.ndarray,
                   labels: np.ndarray) -> dict[str, Any]:
    """The teachers' test accuracies, each and together, for the student's summary."""
    probs = member_probs(members, images)
    rows = [{**m.describe(), "weight": w, "test_acc": float((p.argmax(1) == labels).mean())}
            for m, p, w in zip(members, probs, weights, strict=True)]
    together = float((mean_probs(probs, weights).argmax(1) == labels).mean())
    return {"teachers": rows, "teacher_ensemble_test_acc": together,
            "teacher_params": sum(m.n_params for m in members)}


def teachers_for_run(paths: Sequence[str], weights: str | None, cached: bool,
                     data_digest: str, device: Any, run_dir: Path,
                     resuming: bool) -> tuple[Any, list[Member], list[float]]:
    """`search promote`'s teachers (None, [], [] without any), checked against the data
    and, when a checkpoint is resumed, against the teachers it was trained with.

    Raises:
        UsageError: as `load_teacher`, a teacher that cannot be loaded, or other
            teachers than the checkpoint's.
    """
    if not paths:
        return None, [], []
    try:
        cache = run_dir / rundir.TEACHER_CACHE if cached else None
        teacher, members, factors = load_teacher(paths, weights, device, data_digest, cache)
    except rundir.CheckpointError as err:
        raise UsageError(f"--teacher: {err}") from None
    if resuming:
        try:
            before = [t.get("sha256") for t in rundir.read_config(run_dir).get("teachers") or []]
        except ValueError:
            before = []
        if before != [m.sha256 for m in members]:
            raise UsageError(f"{run_dir}: the checkpoint was trained with other teachers; "
                             "pass --restart to discard it and train from scratch")
    return teacher, members, factors


def validation_leak(members: Sequence[Member], cfg: Any) -> str | None:
    """A note when a teacher may have trained on the images the student validates on
    (another fold or hold-out): the student's validation accuracy is then optimistic."""
    if not cfg.val_size and not cfg.fold:
        return None
    held_out = (cfg.fold, 0 if cfg.fold else cfg.val_size)
    differ = [str(m.folder) for m in members if m.loaded.train is None or
              (m.loaded.train.fold, 0 if m.loaded.train.fold else m.loaded.train.val_size)
              != held_out]
    if not differ:
        return None
    return (f"teacher(s) {', '.join(differ)} held out other images than this run validates "
            "on, so may have trained on them: the validation accuracy is optimistic (the "
            "test accuracy is not affected)")
