"""Stratified, seeded splits: the validation hold-out and training subsets.

Every prefix of `_stratified_order` is as class-balanced as possible, so a
hold-out of any size has the same number of images of each class (up to one).
"""

from __future__ import annotations

import numpy as np


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} "
                         f"{labels.shape}")
    return labels


def _stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """All indices, ordered so that every prefix is as balanced across classes as possible.

    Images are shuffled within each class, then dealt round-robin: the first image
    of every class, then the second of every class, and so on, with the classes'
    turn order itself shuffled so the remainder of an uneven cut falls on random
    classes.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    classes, inverse, counts = np.unique(labels[perm], return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)  # numpy 2.0.x returned it in the input's shape
    by_class = np.argsort(inverse, kind="stable")
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    turn = rng.permutation(len(classes))[inverse]
    return perm[np.lexsort((turn, rank))]


def stratified_split(labels: np.ndarray, n_holdout: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``n_holdout`` images out, the same number of each class (up to one more).

    Args:
        labels: 1-D integer class labels.
        n_holdout: images to hold out, in ``0 .. len(labels) - 1``.
        seed: the same seed gives the same split.

    Returns:
        ``(kept, held_out)``: sorted, disjoint index arrays that together cover
        ``range(len(labels))``.

    Raises:
        ValueError: ``n_holdout`` is out of range or the labels are not 1-D integers.
    """
    labels = _check_labels(labels)
    if not 0 <= n_holdout < len(labels):
        raise ValueError(f"n_holdout must be in 0..{len(labels) - 1} to leave images to train "
                         f"on ({len(labels)} labels), got {n_holdout=}")
    order = _stratified_order(labels, seed)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint, sorted index arrays covering every image, each with the same number
    of each class (up to one).

    Each class's images are shuffled and dealt to the folds in turn, starting at a
    random fold per class, so that the uneven remainders fall on different folds.
    """
    labels = _check_labels(labels)
    if not 2 <= k <= len(labels):
        raise ValueError(f"k must be in 2..{len(labels)} folds, got {k=}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    classes, inverse = np.unique(labels[perm], return_inverse=True)
    inverse = inverse.reshape(-1)
    rank = np.empty(len(labels), np.int64)  # each image's place within its class
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        rank[members] = np.arange(len(members))
    start = rng.integers(0, k, len(classes))
    fold_of = np.empty(len(labels), np.int64)
    fold_of[perm] = (rank + start[inverse]) % k
    return [np.flatnonzero(fold_of == i) for i in range(k)]


def fold_split(labels: np.ndarray, fold: int, k: int, seed: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``(kept, held_out)`` for fold ``fold`` (1-based) of ``k``: held out is that fold."""
    if not 1 <= fold <= k:
        raise ValueError(f"fold must be in 1..{k}, got {fold}")
    folds = stratified_folds(labels, k, seed)
    held = folds[fold - 1]
    return np.sort(np.concatenate([f for i, f in enumerate(folds) if i != fold - 1])), held


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` images balanced across classes; ``n=0`` or ``n >= len`` = all."""
    labels = _check_labels(labels)
    if n < 0:
        raise ValueError(f"n must be >= 0 (0 = all), got {n=}")
    if n == 0 or n >= len(labels):
        return np.arange(len(labels))
    return np.sort(_stratified_order(labels, seed)[:n])


# --- prediction inputs and download -----------------------------------------------
