"""Issue 15's recipe pieces: SAM/ASAM steps, the EMA (BN statistics, warm-up, raw or
averaged evaluation), and the multistep and floored cosine schedules."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models import ArchConfig, StageConfig
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.ema import ModelEma
from trainers.sam import ASAM_ETA, Sam
from trainers.training import fit, lr_factor

TINY = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16)
QUICK = TrainConfig(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=400,
                    val_size=200, tta_flip=False)


def quiet(_: str) -> None:
    pass


# -- SAM ------------------------------------------------------------------------------


def sam_step_by_hand(w: torch.Tensor, x: torch.Tensor, rho: float, lr: float,
                     adaptive: bool) -> torch.Tensor:
    """One SGD step (no momentum) of loss = sum((x @ w)^2) with the gradient taken at the
    SAM (or ASAM) point, written out from the papers' formulas."""
    def grad(v: torch.Tensor) -> torch.Tensor:
        return 2 * x.T @ (x @ v)  # d/dv sum((x v)^2)

    g = grad(w)
    if adaptive:
        t = w.abs() + ASAM_ETA
        e = rho * t * t * g / torch.linalg.vector_norm(t * g)
    else:
        e = rho * g / torch.linalg.vector_norm(g)
    return w - lr * grad(w + e)


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_sam_step_equals_the_two_pass_formula(adaptive: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64)
    w0 = torch.randn(3, 1, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    model.weight.data.copy_(w0.T)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = Sam(model, opt, rho=0.5 if adaptive else 0.05, adaptive=adaptive)

    def loss() -> torch.Tensor:
        return (model(x) ** 2).sum()

    opt.zero_grad()
    loss().backward()
    sam.second_pass(loss)
    opt.step()
    expected = sam_step_by_hand(w0, x, sam.rho, 0.1, adaptive)
    assert torch.allclose(model.weight.data.T, expected, atol=1e-12)
    plain = w0 - 0.1 * 2 * x.T @ (x @ w0)
    assert not torch.allclose(expected, plain, atol=1e-6)  # the check above can fail


def test_sam_every_k_is_due_on_multiples_of_k() -> None:
    sam = Sam(nn.Linear(1, 1), torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), 0.05,
              every=3)
    assert [s for s in range(1, 10) if sam.due(s)] == [3, 6, 9]


def test_the_second_pass_leaves_batch_norm_statistics_as_the_first_set_them() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(6, 3, 8, 8)
    model(x)  # materialise the lazy layer
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(x).sum()
    bn = model[1]
    after_first = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    opt.zero_grad()
    loss.backward()
    Sam(model, opt, 0.05).second_pass(lambda: model(x).sum())
    assert torch.equal(bn.running_mean, after_first[0])
    assert torch.equal(bn.running_var, after_first[1])
    assert torch.equal(bn.num_batches_tracked, after_first[2])


def test_fit_with_sam_and_ema_resumes_exactly(cifar_jpeg: CifarData, tmp_path: Path) -> None:
    # With TrivialAugment and RICAP too: their draws come from the checkpointed generators.
    cfg = dataclasses.replace(QUICK, optimizer="sam", sam_every=2, ema=0.9,
                              policy="trivialaugment", ricap=0.3)
    straight = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "a",
                   deterministic=True, log=quiet)
    assert straight.best_val_acc == straight.best_val_acc  # finite, not NaN
    fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
        deterministic=True, report=lambda epoch, _: epoch == 1, log=quiet)
    resumed = fit(TINY, cfg, cifar_jpeg, device="cpu", checkpoint_dir=tmp_path / "b",
                  deterministic=True, log=quiet)
    assert resumed.resumed_from == 1
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = fit(TINY, dataclasses.replace(cfg, optimizer="sgd"), cifar_jpeg, device="cpu",
                deterministic=True, log=quiet)
    assert not torch.equal(plain.model.state_dict()["fc.weight"], a["fc.weight"])


# -- EMA ------------------------------------------------------------------------------


def test_ema_warm_up_follows_its_formula() -> None:
    source = nn.Linear(1, 1, bias=False)
    ema = ModelEma(source, 0.99, warmup=True)
    expected = source.weight.item()
    for t in range(5):
        source.weight.data.fill_(float(t + 1))
        decay = min(0.99, (1 + t) / (10 + t))
        assert ema.current_decay() == pytest.approx(decay)
        ema.update()
        expected = decay * expected + (1 - decay) * (t + 1)
        assert ema.model.weight.item() == pytest.approx(expected)
    assert ModelEma(source, 0.99, warmup=False).current_decay() == 0.99


def test_ema_averages_batch_norm_statistics_and_copies_counters() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(model, 0.5, warmup=False)
    bn, mean = model[1], model[1].running_mean.clone()
    model(torch.randn(4, 3, 8, 8) + 3.0)  # moves the raw running mean
    ema.update()
    averaged = ema.model[1]
    assert not torch.equal(averaged.running_mean, bn.running_mean)
    assert torch.allclose(averaged.running_mean, 0.5 * mean + 0.5 * bn.running_mean)
    assert torch.equal(averaged.num_batches_tracked, bn.num_batches_tracked)


def test_an_old_ema_entry_loads_and_goes_on_without_warm_up() -> None:
    model = nn.Linear(2, 2)
    ema = ModelEma(model, 0.999, warmup=True)
    ema.load_state_dict(model.state_dict(), steps_done=120)  # the previous release's format
    assert (ema.updates, ema.warmup) == (120, False)
    fresh = ModelEma(model, 0.999, warmup=True)
    fresh.load_state_dict(ema.state_dict(), steps_done=0)
    assert fresh.updates == 120


@pytest.mark.parametrize("ema_eval", [True, False])
def test_ema_eval_chooses_the_weights_fit_evaluates_and_returns(
        cifar_jpeg: CifarData, ema_eval: bool) -> None:
    cfg = dataclasses.replace(QUICK, epochs=1, ema=0.9, ema_eval=ema_eval)
    result = fit(TINY, cfg, cifar_jpeg, device="cpu", log=quiet)
    raw = fit(TINY, dataclasses.replace(cfg, ema=0.0), cifar_jpeg, device="cpu", log=quiet)
    same = all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(),
                                                 raw.model.state_dict().values(), strict=True))
    assert same is not ema_eval  # the raw weights are those of a run without EMA


# -- schedules ------------------------------------------------------------------------


def test_multistep_cuts_the_rate_at_each_milestone() -> None:
    cfg = TrainConfig(epochs=10, schedule="multistep", warmup_epochs=1.0, milestones="0.5,0.8",
                      gamma=0.2)
    f = lr_factor(cfg, steps_per_epoch=10)
    assert [f(s) for s in (0, 9)] == [pytest.approx(0.1), 1.0]  # warm-up
    assert [f(s) for s in (49, 50, 79, 80, 99)] == pytest.approx([1.0, 0.2, 0.2, 0.04, 0.04])


def test_cosine_with_a_floor_ends_at_the_floor_and_without_one_is_unchanged() -> None:
    floored = lr_factor(TrainConfig(epochs=10, warmup_epochs=0.0, lr_floor=0.1), 10)
    plain = lr_factor(TrainConfig(epochs=10, warmup_epochs=0.0), 10)
    assert floored(0) == pytest.approx(1.0) and floored(100) == pytest.approx(0.1)
    assert floored(50) == pytest.approx(0.1 + 0.9 * plain(50))
    assert plain(100) == pytest.approx(0.0) and plain(50) == pytest.approx(0.5)


def test_bad_milestones_are_refused_naming_the_field() -> None:
    for text in ("0.8,0.5", "0,0.5", "half", "0.5,1.0"):
        with pytest.raises(ValueError, match="milestones: must be increasing fractions"):
            TrainConfig(milestones=text)


# -- no validation split (final runs on all the training images) ----------------------


def test_val_size_0_trains_on_every_image_and_reports_no_validation(
        cifar_jpeg: CifarData) -> None:
    from search.results.progress import epoch_line
    from trainers.training import Split

    split = Split.carve(cifar_jpeg, TrainConfig(val_size=0), torch.device("cpu"))
    assert len(split.train_labels) == len(cifar_jpeg.train_labels) and not len(split.val_labels)
    held = Split.carve(cifar_jpeg, TrainConfig(val_size=500), torch.device("cpu"))
    assert len(held.train_labels) == len(cifar_jpeg.train_labels) - 500
    seen: list[dict[str, float]] = []
    result = fit(TINY, dataclasses.replace(QUICK, epochs=1, val_size=0), cifar_jpeg,
                 device="cpu", report=lambda _, m: bool(seen.append(m)), log=quiet)
    assert math.isnan(seen[0]["val_acc"]) and math.isnan(result.best_val_acc)
    assert 0.0 <= seen[0]["train_acc"] <= 1.0
    assert "no validation split" in epoch_line(seen[0], 1)
    assert "val loss" in epoch_line({**seen[0], "val_loss": 1.0, "val_acc": 0.5}, 1)
    with pytest.raises(ValueError, match="val_size: must be 0"):
        TrainConfig(val_size=5)
