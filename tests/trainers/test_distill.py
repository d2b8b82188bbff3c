"""Distillation (the loss, the teacher, its cache, exact resume) and cross-validation folds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from tests.trainers.test_recipes import QUICK, TINY, quiet
from trainers.augment import Batch, normalize
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.distill import Teacher, TeacherCacheError, kd_loss
from trainers.splits import fold_split, stratified_folds
from trainers.training import SPLIT_SEED, Split, fit


def test_kd_loss_equals_the_formula_on_hand_made_logits() -> None:
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher_logits = torch.tensor([[1.0, 1.0, 0.0], [-2.0, 0.0, 2.0]])
    labels = torch.tensor([0, 2])
    t, alpha = 4.0, 0.9
    p_t = torch.softmax(teacher_logits / t, 1)
    p_s = torch.softmax(student / t, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()  # KL(teacher || student), per image
    ce = -torch.log_softmax(student, 1)[torch.arange(2), labels].mean()
    expected = alpha * t * t * kl + (1 - alpha) * ce
    got = kd_loss(student, p_t, labels, alpha=alpha, temperature=t)
    assert torch.allclose(got, expected, atol=1e-6)
    # Soft (mixed) targets and label smoothing go to the cross-entropy term as usual.
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    assert torch.allclose(kd_loss(student, p_t, soft, alpha=0.0, temperature=t),
                          F.cross_entropy(student, soft))
    assert torch.allclose(kd_loss(student, p_t, labels, alpha=1.0, temperature=2.0),
                          4.0 * F.kl_div(torch.log_softmax(student / 2, 1), p_t,
                                         reduction="batchmean"))


def test_the_teacher_is_the_weighted_mean_of_its_members_softmax() -> None:
    torch.manual_seed(0)
    a, b = build_model(TINY).eval(), build_model(TINY).eval()
    x = torch.randn(6, 3, 32, 32)
    teacher = Teacher([a, b], [3.0, 1.0])
    with torch.no_grad():
        want = 0.75 * torch.softmax(a(x) / 2, 1) + 0.25 * torch.softmax(b(x) / 2, 1)
    assert torch.allclose(teacher.probs(x, 2.0), want, atol=1e-6)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    with pytest.raises(ValueError, match="weights"):
        Teacher([a, b], [1.0])


def test_folds_partition_the_images_stratified(cifar_jpeg: CifarData) -> None:
    labels = cifar_jpeg.train_labels
    folds = stratified_folds(labels, 5, SPLIT_SEED)
    every = np.concatenate(folds)
    assert len(every) == len(labels) and len(np.unique(every)) == len(labels)
    counts = np.stack([np.bincount(labels[f], minlength=10) for f in folds])
    assert (counts.max(0) - counts.min(0)).max() <= 1  # each class spread evenly
    for k in range(1, 6):
        kept, held = fold_split(labels, k, 5, SPLIT_SEED)
        assert np.array_equal(held, folds[k - 1]) and not np.intersect1d(kept, held).size
        assert len(kept) + len(held) == len(labels)
    assert np.array_equal(stratified_folds(labels, 5, SPLIT_SEED)[2], folds[2])  # fixed


def test_a_fold_run_trains_without_its_fold_and_validates_on_it(cifar_jpeg: CifarData) -> None:
    cfg = dataclasses.replace(QUICK, fold="2/5", train_subset=0)
    split = Split.carve(cifar_jpeg, cfg, torch.device("cpu"))
    held = stratified_folds(cifar_jpeg.train_labels, 5, SPLIT_SEED)[1]
    assert len(split.val_labels) == len(held) and len(split.train_labels) == 50_000 - len(held)
    # The images themselves: no training image of the run is one of fold 2's.
    train = {bytes(im) for im in split.train_images.numpy()}
    assert not any(bytes(im) in train for im in cifar_jpeg.train_images[held[:2000]])
    assert torch.equal(split.val_labels, torch.from_numpy(cifar_jpeg.train_labels[held]))
    with pytest.raises(ValueError, match="fold"):
        TrainConfig(fold="6/5")


def _teacher(seed: int, cache: Path | None = None) -> Teacher:
    torch.manual_seed(seed)
    return Teacher([build_model(TINY)], digests=[f"digest-{seed}"], cache=cache)


def test_alpha_0_trains_exactly_as_without_a_teacher(cifar_jpeg: CifarData) -> None:
    plain = fit(TINY, QUICK, cifar_jpeg, device="cpu", deterministic=True, log=quiet)
    taught = fit(TINY, dataclasses.replace(QUICK, kd_alpha=0.0), cifar_jpeg, device="cpu",
                 deterministic=True, log=quiet, teacher=_teacher(1))
    a, b = plain.model.state_dict(), taught.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    distilled = fit(TINY, QUICK, cifar_jpeg, device="cpu", deterministic=True, log=quiet,
                    teacher=_teacher(1))
    assert not torch.equal(distilled.model.state_dict()["fc.weight"], a["fc.weight"])


def test_a_distilled_run_resumes_exactly(cifar_jpeg: CifarData, tmp_path: Path) -> None:
    cfg = dataclasses.replace(QUICK, mixup=0.4)  # soft targets and soft teachers together
    straight = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "a",
                   deterministic=True, log=quiet, teacher=_teacher(2))
    fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b", deterministic=True,
        log=quiet, teacher=_teacher(2), report=lambda epoch, _: epoch == 1)
    resumed = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
                  deterministic=True, log=quiet, teacher=_teacher(2))
    assert resumed.resumed_from == 1
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_teacher_outputs_are_computed_once_and_belong_to_their_run(
        cifar_jpeg: CifarData, tmp_path: Path) -> None:
    cache = tmp_path / "teacher-probs.pt"
    images = torch.from_numpy(cifar_jpeg.train_images[:300])
    teacher = _teacher(3, cache)
    teacher.prepare(images, QUICK, "data-1")
    assert cache.exists() and teacher.cached is not None
    positions = torch.tensor([5, 0, 299, 17])
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long),
                  torch.zeros(4, dtype=torch.long), positions)
    direct = teacher.probs(normalize(images[positions]), QUICK.kd_temperature)
    assert torch.allclose(teacher.soft_targets(batch, QUICK.kd_temperature), direct, atol=1e-6)
    again = _teacher(3, cache)
    again.prepare(images, QUICK, "data-1")  # read back, not computed
    assert again.cached is not None and torch.equal(again.cached, teacher.cached)
    for other, cfg, digest in ((_teacher(4, cache), QUICK, "data-1"),
                               (_teacher(3, cache), QUICK, "data-2"),
                               (_teacher(3, cache), dataclasses.replace(QUICK, kd_temperature=2),
                                "data-1")):
        with pytest.raises(TeacherCacheError, match="another run"):
            other.prepare(images, cfg, digest)
    trained = fit(TINY, QUICK, cifar_jpeg, device="cpu", deterministic=True, log=quiet,
                  teacher=_teacher(3, tmp_path / "fit-cache.pt"))
    assert (tmp_path / "fit-cache.pt").exists() and trained.history
