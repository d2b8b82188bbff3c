"""Stratified splits: balanced, disjoint, covering, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.splits import stratified_split, stratified_subset


def uneven_labels() -> np.ndarray:
    return np.random.default_rng(1).permutation(np.repeat(np.arange(10), 50 + np.arange(10)))


@pytest.mark.parametrize("n_holdout", [0, 7, 10, 123, 400])
def test_stratified_split_is_balanced_disjoint_and_covering(n_holdout: int) -> None:
    labels = uneven_labels()
    kept, held = stratified_split(labels, n_holdout, seed=3)
    assert len(held) == n_holdout
    assert np.intersect1d(kept, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    counts = np.bincount(labels[held], minlength=10)
    assert counts.max() - counts.min() <= 1


def test_stratified_split_is_deterministic_per_seed() -> None:
    labels = uneven_labels()
    a = stratified_split(labels, 100, seed=0)
    b = stratified_split(labels, 100, seed=0)
    c = stratified_split(labels, 100, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_and_subset_refuse_out_of_range_sizes() -> None:
    labels = uneven_labels()
    for bad in (-1, len(labels)):
        with pytest.raises(ValueError, match="n_holdout"):
            stratified_split(labels, bad, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        stratified_subset(labels, -1, seed=0)


def test_stratified_subset_takes_balanced_images_or_all() -> None:
    labels = uneven_labels()
    subset = stratified_subset(labels, 95, seed=2)
    assert len(subset) == len(np.unique(subset)) == 95
    counts = np.bincount(labels[subset], minlength=10)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(stratified_subset(labels, 0, seed=2), np.arange(len(labels)))
    np.testing.assert_array_equal(stratified_subset(labels, 10**6, seed=2),
                                  np.arange(len(labels)))
