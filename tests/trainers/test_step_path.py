"""The training step's speed machinery, on the CPU: constants made once, no host data
inside the step, EMA in multi-tensor kernels, checkpoints by epochs or minutes,
validation TTA on the last epoch, the epoch augmented ahead, compile resets.

Its CUDA counterpart (sync debug mode, bf16, compile) is `test_cuda.py`.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trainers.training as fit_module
from models import ArchConfig, StageConfig, build_model
from space.spec import load_spec
from trainers.augment import MEAN, STD, TrainLoader, constant, normalize
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.ema import ModelEma
from trainers.rundir import CHECKPOINT
from trainers.training import check_same_run, compile_model, fit

TINY = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16)
QUICK = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=400,
                    val_size=200, tta_flip=True)


def quiet(_: str) -> None:
    pass


def test_normalize_uses_one_constant_per_device() -> None:
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    expected = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    assert torch.equal(normalize(images), expected)
    device = torch.device("cpu")
    assert constant(MEAN, device) is constant(MEAN, device)
    assert constant(MEAN, device, torch.float64) is not constant(MEAN, device)


class TensorCounter:
    """Counts tensors built from host values (``torch.tensor``, ``torch.as_tensor``): on
    CUDA each is a blocking host-to-device copy."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in ("tensor", "as_tensor"):
            original = getattr(torch, name)

            def counted(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                self.calls += 1
                return __original(*args, **kwargs)

            monkeypatch.setattr(torch, name, counted)


def test_no_tensor_is_built_from_host_values_inside_the_step(
        cifar_jpeg: CifarData, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every per-batch augmentation on, and EMA: none may build a tensor from host values
    # once the first step has made the per-device constants.
    cfg = dataclasses.replace(QUICK, epochs=1, policy="trivialaugment", jitter=0.2, rotate=10,
                              cutout=8, erasing=0.5, mixup=0.2, cutmix=0.5, ricap=0.3,
                              ema=0.9, label_smoothing=0.1)
    counter = TensorCounter(monkeypatch)
    at_step: dict[int, int] = {}
    fit(TINY, cfg, cifar_jpeg, device="cpu", log=quiet,
        on_step=lambda _, step, __: at_step.__setitem__(step, counter.calls))
    steps = sorted(at_step)
    assert len(steps) == 400 // 64
    assert at_step[steps[-1]] == at_step[steps[1]], at_step


def test_the_counter_sees_a_tensor_built_per_batch(
        cifar_jpeg: CifarData, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a normalisation that builds its constants per batch is
    seen."""
    import trainers.augment as augment

    def per_batch(values: tuple[float, ...], device: torch.device,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(values, device=device, dtype=dtype)

    monkeypatch.setattr(augment, "constant", per_batch)
    counter = TensorCounter(monkeypatch)
    at_step: dict[int, int] = {}
    fit(TINY, dataclasses.replace(QUICK, epochs=1), cifar_jpeg, device="cpu", log=quiet,
        on_step=lambda _, step, __: at_step.__setitem__(step, counter.calls))
    assert at_step[max(at_step)] > at_step[2]


def test_ema_update_copies_integer_buffers_and_lerps_the_rest() -> None:
    torch.manual_seed(0)
    source = build_model(TINY)
    ema = ModelEma(source, 0.5, warmup=False)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    source.train()
    source(torch.randn(8, 3, 32, 32))  # BN statistics and counters move
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    ema.update()
    after, theirs = ema.model.state_dict(), source.state_dict()
    for key, value in after.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.5 * before[key] + 0.5 * theirs[key]), key
        else:
            assert torch.equal(value, theirs[key]) and int(value) == 1, key


def checkpoint_epochs(cifar_jpeg: CifarData, tmp_path: Path, **kwargs: Any) -> list[int]:
    """The epochs after which a checkpoint was on disk when the report ran."""
    seen: list[int] = []

    def report(epoch: int, _: dict[str, float]) -> bool:
        path = tmp_path / CHECKPOINT
        if path.exists():
            seen.append(int(torch.load(path, weights_only=True)["epoch"]))
        return False

    cfg = dataclasses.replace(QUICK, epochs=4, tta_flip=False)
    fit(TINY, cfg, cifar_jpeg, device="cpu", report=report, checkpoint_dir=tmp_path,
        log=quiet, **kwargs)
    return seen


def test_checkpoints_come_by_epochs_or_by_minutes(cifar_jpeg: CifarData,
                                                  tmp_path: Path) -> None:
    # By epochs only: after epochs 3 and 4 (the last).
    assert checkpoint_epochs(cifar_jpeg, tmp_path / "a", checkpoint_every=3) == [3, 4]
    # A time limit every epoch outlasts: every epoch.
    assert checkpoint_epochs(cifar_jpeg, tmp_path / "b", checkpoint_every=3,
                             checkpoint_seconds=0.0) == [1, 2, 3, 4]
    # One no epoch reaches: by epochs again.
    assert checkpoint_epochs(cifar_jpeg, tmp_path / "c", checkpoint_every=3,
                             checkpoint_seconds=3600.0) == [3, 4]


@pytest.mark.parametrize(("val_tta", "expected"), [("final", [False, False, True]),
                                                   ("every", [True, True, True])])
def test_validation_tta_on_the_last_epoch_unless_every(
        cifar_jpeg: CifarData, monkeypatch: pytest.MonkeyPatch, val_tta: str,
        expected: list[bool]) -> None:
    flips: list[bool] = []
    evaluate = fit_module.evaluate

    def recorded(*args: Any, **kwargs: Any) -> tuple[float, float]:
        flips.append(kwargs["tta_flip"])
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(fit_module, "evaluate", recorded)
    fit(TINY, dataclasses.replace(QUICK, val_tta=val_tta), cifar_jpeg, device="cpu", log=quiet)
    assert flips == expected


def test_trials_of_different_lengths_validate_with_tta_every_epoch(tmp_path: Path) -> None:
    import optuna

    def recipe(study: str) -> TrainConfig:
        spec = load_spec(study)
        values = {k: dim.extremes()[0] for k, dim in spec.train.items()}
        return spec.sample_train(optuna.trial.FixedTrial(values))

    assert recipe("resnet-budget").val_tta == "final"  # every trial 15 epochs
    assert recipe("smoke").val_tta == "every"  # epochs in [1, 2]
    own = tmp_path / "own.toml"  # a study file's own choice wins
    own.write_text((Path(__file__).parents[2] / "space/studies/smoke.toml").read_text().replace(
        "[train]", '[train]\nval_tta = "final"', 1))
    assert recipe(str(own)).val_tta == "final"


def test_augment_ahead_serves_each_image_once_augmented(cifar_jpeg: CifarData) -> None:
    images = torch.from_numpy(cifar_jpeg.train_images[:300])
    labels = torch.from_numpy(cifar_jpeg.train_labels[:300]).long()
    plain = TrainConfig(batch_size=64, crop=False, flip=False, augment_ahead=True)
    gen = torch.Generator().manual_seed(0)
    batches = list(TrainLoader(images, labels, plain, gen, random.Random(0)))
    assert len(batches) == 300 // 64
    positions = torch.cat([b.positions for b in batches if b.positions is not None])
    assert len(positions.unique()) == len(positions) == 4 * 64
    for batch in batches:  # no augmentation: the buffer holds each position's own image
        assert batch.positions is not None
        assert torch.equal(batch.images, normalize(images[batch.positions]))
        assert torch.equal(batch.labels, labels[batch.positions])
    # With crops, flips and mixup: the images differ from the plain ones, the targets are
    # soft, and a generator in the same state gives the same epoch again.
    mixed = dataclasses.replace(plain, crop=True, flip=True, mixup=1.0)

    def epoch() -> list[torch.Tensor]:
        loader = TrainLoader(images, labels, mixed, torch.Generator().manual_seed(1),
                             random.Random(1))
        return [b.images for b in loader] + [b.targets for b in loader]

    first, again = epoch(), epoch()
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].shape == (64, 3, 32, 32) and first[len(first) // 2].shape == (64, 10)


def test_augment_ahead_trains(cifar_jpeg: CifarData) -> None:
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.1, warmup_epochs=0.5, train_subset=2000,
                      val_size=1000, augment_ahead=True, cutout=8, seed=0)
    result = fit(TINY, cfg, cifar_jpeg, device="cpu", log=quiet)
    assert result.val_acc > 0.25, result.history  # chance: 0.10


def test_compile_resets_dynamo_when_the_architecture_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    resets: list[int] = []
    compiled: list[dict[str, Any]] = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))

    def fake_compile(model: nn.Module, **kwargs: Any) -> nn.Module:
        compiled.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(fit_module, "_compiled_for", [])
    other = ArchConfig(stages=(StageConfig(1, 8),), stem_width=8)
    for arch in (TINY, TINY, other, other, TINY):
        compile_model(nn.Identity(), arch, "reduce-overhead")
    assert len(resets) == 2  # TINY -> other, other -> TINY
    assert compiled[0] == {"dynamic": False, "mode": "reduce-overhead"}


def test_a_run_resumes_with_compile_switched(cifar_jpeg: CifarData, tmp_path: Path) -> None:
    fit(TINY, dataclasses.replace(QUICK, epochs=1), cifar_jpeg, device="cpu",
        checkpoint_dir=tmp_path, log=quiet)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    check_same_run(state, TINY, dataclasses.replace(QUICK, epochs=1, compile=True,
                                                    compile_mode="reduce-overhead"), tmp_path)
    with pytest.raises(Exception, match="differs in augment_ahead"):
        check_same_run(state, TINY, dataclasses.replace(QUICK, epochs=1, augment_ahead=True),
                       tmp_path)
