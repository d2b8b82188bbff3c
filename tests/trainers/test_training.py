"""fit: learns, reports, stops, diverges loudly, checkpoints and resumes exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trainers.training as fit_module
from models import ArchConfig, StageConfig
from models.blocks_shake import Shake
from trainers.checkpoint import CheckpointError
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.rundir import CHECKPOINT, PREV_CHECKPOINT
from trainers.training import TrainingDiverged, fit, lr_factor, param_groups

TINY = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16)
QUICK = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=400,
                    val_size=200, tta_flip=False)


def quiet(_: str) -> None:
    pass


def test_tiny_network_beats_chance_on_real_images(cifar_jpeg: CifarData) -> None:
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.1, warmup_epochs=0.5, train_subset=2000,
                      val_size=1000, tta_flip=True, seed=0)
    result = fit(TINY, cfg, cifar_jpeg, device="cpu", log=quiet)
    assert result.epochs == 3 and len(result.history) == 3
    # Chance is 0.10 on 10 balanced classes.
    assert result.val_acc > 0.25, result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_report_sees_every_epoch_and_can_stop_the_run(cifar_jpeg: CifarData) -> None:
    seen: list[tuple[int, dict[str, float]]] = []

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics))
        return epoch == 2

    result = fit(TINY, QUICK, cifar_jpeg, device="cpu", report=report, log=quiet)
    assert [e for e, _ in seen] == [1, 2]
    assert result.stopped and result.epochs == 2
    keys = {"val_acc", "val_loss", "train_loss", "train_acc", "lr", "seconds", "images_per_s"}
    assert keys <= set(seen[0][1])
    assert 0.0 <= seen[0][1]["val_acc"] <= 1.0


def test_each_epoch_is_checkpointed_before_it_is_reported(cifar_jpeg: CifarData,
                                                          tmp_path: Path) -> None:
    """promote writes metrics.csv in the report: it must never run ahead of the checkpoint,
    or a kill between the two resumes an epoch earlier than the CSV says."""
    on_disk: list[tuple[int, int]] = []

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
        on_disk.append((epoch, int(state["epoch"])))
        assert len(state["history"]) == epoch
        return False

    fit(TINY, dataclasses.replace(QUICK, epochs=2), cifar_jpeg, device="cpu", report=report,
        checkpoint_dir=tmp_path, log=quiet)
    assert on_disk == [(1, 1), (2, 2)]


def test_a_stop_between_checkpoints_still_saves_that_epoch(cifar_jpeg: CifarData,
                                                           tmp_path: Path) -> None:
    result = fit(TINY, QUICK, cifar_jpeg, device="cpu", report=lambda epoch, _: epoch == 1,
                 checkpoint_dir=tmp_path, checkpoint_every=2, log=quiet)
    assert result.stopped and result.epochs == 1
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 1


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resumed_run_ends_with_the_same_weights(cifar_jpeg: CifarData, tmp_path: Path) -> None:
    # Every random source in play: dropout, crops, flips, cutout, mixup/cutmix, EMA.
    arch = ArchConfig.from_dict({**TINY.to_dict(), "dropout": 0.2})
    cfg = TrainConfig(**{**QUICK.to_dict(), "cutout": 8, "mixup": 0.2, "cutmix": 0.5,
                         "ema": 0.9, "label_smoothing": 0.1})
    straight = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "a",
                   deterministic=True, log=quiet)
    first = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
                deterministic=True, report=lambda epoch, _: epoch == 1, log=quiet)
    assert first.epochs == 1
    lines: list[str] = []
    resumed = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
                  deterministic=True, log=lines.append)
    assert resumed.resumed_from == 1
    assert any("resuming from the checkpoint of epoch 1" in line for line in lines)
    a, b = weights(straight.model), weights(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
             for row in straight.history]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                     for row in resumed.history]


def test_a_shake_shake_network_with_drop_path_resumes_exactly(
        cifar_jpeg: CifarData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shake-Shake's mixing weights and drop-path's masks are drawn in every step; a
    # resume must draw the very ones the uninterrupted run drew.
    arch = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16,
                      block=Shake(), branch_drop="path", branch_drop_rate=0.5)
    cfg = TrainConfig(**{**QUICK.to_dict(), "epochs": 2})
    straight = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "a",
                   deterministic=True, log=quiet)
    fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
        deterministic=True, report=lambda epoch, _: epoch == 1, log=quiet)
    resumed = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
                  deterministic=True, log=quiet)
    assert resumed.resumed_from == 1
    a, b = weights(straight.model), weights(resumed.model)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The draws come from the global generators the checkpoint restores: without that
    # restore (augmentation has its own generator, so only these draws change), a resumed
    # run ends elsewhere.
    monkeypatch.setattr(fit_module, "set_rng_state", lambda state: torch.manual_seed(12345))
    fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "c",
        deterministic=True, report=lambda epoch, _: epoch == 1, log=quiet)
    forgetful = fit(arch, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "c",
                    deterministic=True, log=quiet)
    assert forgetful.resumed_from == 1
    assert not torch.equal(weights(forgetful.model)["fc.weight"], a["fc.weight"])


def test_checkpoint_holds_everything_and_loads_weights_only(cifar_jpeg: CifarData,
                                                            tmp_path: Path) -> None:
    cfg = TrainConfig(**{**QUICK.to_dict(), "epochs": 2, "ema": 0.5})
    fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)
    latest = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    previous = torch.load(tmp_path / PREV_CHECKPOINT, weights_only=True)
    assert (latest["epoch"], previous["epoch"]) == (2, 1)
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "arch", "train",
                "code_version", "history"):
        assert latest[key] is not None, key
    assert set(latest["rng"]) >= {"python", "numpy", "torch", "cuda", "device_gen", "host_rng"}
    assert ArchConfig.from_dict(latest["arch"]) == TINY
    assert TrainConfig.from_dict(latest["train"]) == cfg
    assert latest["code_version"].startswith("0.1.0+src.")
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_latest_checkpoint_falls_back_to_the_previous(cifar_jpeg: CifarData,
                                                                tmp_path: Path) -> None:
    fit(TINY, QUICK, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path,
        report=lambda epoch, _: epoch == 2, log=quiet)
    latest = tmp_path / CHECKPOINT
    latest.write_bytes(latest.read_bytes()[:1000])
    lines: list[str] = []
    result = fit(TINY, QUICK, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path,
                 log=lines.append)
    assert result.resumed_from == 1 and result.epochs == 3
    assert any("falling back to checkpoint.prev.pt" in line for line in lines), lines


def test_unreadable_checkpoints_and_foreign_ones_are_refused(cifar_jpeg: CifarData,
                                                             tmp_path: Path) -> None:
    cfg = TrainConfig(**{**QUICK.to_dict(), "epochs": 1})
    fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)
    other = ArchConfig.from_dict({**TINY.to_dict(), "stem_width": 8})
    with pytest.raises(CheckpointError, match="another architecture"):
        fit(other, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 2})
    with pytest.raises(CheckpointError, match="differs in epochs"):
        fit(TINY, longer, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)


class GoesNaN(nn.Module):
    """A real network whose training output turns NaN from its ``bad_from``-th call."""

    def __init__(self, inner: nn.Module, bad_from: int) -> None:
        super().__init__()
        self.inner, self.bad_from, self.calls = inner, bad_from, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad_from:
                out = out * float("nan")
        return out


def test_nan_loss_raises_training_diverged_naming_epoch_and_step(
        cifar_jpeg: CifarData, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = fit_module.build_model
    steps = 400 // 64  # per epoch, at QUICK's subset and batch size

    def build(arch: ArchConfig, **kwargs: Any) -> nn.Module:
        return GoesNaN(real_build(arch, **kwargs), bad_from=steps + 3)

    monkeypatch.setattr(fit_module, "build_model", build)
    with pytest.raises(TrainingDiverged) as info:
        fit(TINY, QUICK, cifar_jpeg, device="cpu", log=quiet)
    assert (info.value.epoch, info.value.step) == (2, 3)
    assert "epoch 2, step 3" in str(info.value)


def test_weight_decay_spares_batch_norm_and_biases() -> None:
    model = fit_module.build_model(TINY)
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_schedules_warm_up_then_decay_to_zero() -> None:
    cosine = lr_factor(TrainConfig(epochs=10, warmup_epochs=1.0), steps_per_epoch=10)
    assert cosine(0) == pytest.approx(0.1)
    assert cosine(9) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5)
    assert cosine(99) < 0.001
    onecycle = lr_factor(TrainConfig(epochs=8, schedule="onecycle", warmup_epochs=2.0), 10)
    assert onecycle(0) == pytest.approx(0.04)
    assert onecycle(20) == pytest.approx(1.0)
    assert onecycle(80) == 0.0
    values = [onecycle(s) for s in range(81)]
    assert values.index(max(values)) == 20


def test_a_checkpoint_from_before_a_field_existed_matches_its_run(tmp_path: Path) -> None:
    """Configs are compared after reading them back (defaults filled), never as raw dicts:
    a checkpoint written before `dropout` or `compile` existed, or in the first
    release's flat block format, is still the same run."""
    from trainers.training import check_same_run

    old_arch = {k: v for k, v in TINY.to_dict().items() if k not in ("dropout", "block")}
    old_arch.update(block_type="basic", expansion=4)  # release 0.1's form
    old_train = {k: v for k, v in QUICK.to_dict().items() if k != "compile"}
    check_same_run({"arch": old_arch, "train": old_train}, TINY, QUICK, tmp_path)
    # compile is how the run executes, not what it trains: it may change on a resume.
    check_same_run({"arch": old_arch, "train": old_train}, TINY,
                   TrainConfig(**{**QUICK.to_dict(), "compile": True}), tmp_path)
    with pytest.raises(CheckpointError, match="another recipe \\(differs in cutout\\)"):
        check_same_run({"arch": old_arch, "train": old_train}, TINY,
                       TrainConfig(**{**QUICK.to_dict(), "cutout": 4}), tmp_path)
    with pytest.raises(CheckpointError, match="configs are unreadable: block_type"):
        check_same_run({"arch": {**old_arch, "block_type": "nope"}, "train": old_train},
                       TINY, QUICK, tmp_path)


@pytest.mark.parametrize("ema_eval", [True, False])
def test_a_checkpoint_with_ema_loads_the_weights_the_run_evaluates(
        cifar_jpeg: CifarData, tmp_path: Path, ema_eval: bool) -> None:
    from trainers.inference import load_model

    cfg = dataclasses.replace(QUICK, epochs=1, ema=0.9, ema_eval=ema_eval)
    result = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path, log=quiet)
    loaded = load_model(tmp_path / CHECKPOINT)
    evaluated = result.model.state_dict()
    assert all(torch.equal(v, evaluated[k]) for k, v in loaded.model.state_dict().items())
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    other = state["model"] if ema_eval else state["ema"]["model"]
    assert any(not torch.equal(v, other[k]) for k, v in loaded.model.state_dict().items()
               if v.is_floating_point())
