"""Shake-Shake, ShakeDrop and drop-path: train differs from eval, eval is their expectation,
the backward weights are the documented ones, and networks using them run under the
run's seeded generator, bf16 autocast, channels-last and torch.compile's tracer."""

from __future__ import annotations

import pytest
import torch

from models import BASELINES, ArchConfig, StageConfig, build_model
from models.blocks_shake import Shake
from models.config import BRANCH_DROPS
from models.stochastic import BRANCH_DROPS as DROP_MODULES
from models.stochastic import DropPath, ShakeDrop, shake_mix

SAMPLES = 4000  # training passes averaged against eval


def shake_net(branch_drop: str = "path", rate: float = 0.3, **kw: object) -> ArchConfig:
    return ArchConfig(stages=(StageConfig(2, 8), StageConfig(2, 16, stride=2)), stem_width=8,
                      block=Shake(**kw), branch_drop=branch_drop,  # type: ignore[arg-type]
                      branch_drop_rate=rate)


def test_the_config_and_the_module_table_name_the_same_regularisers() -> None:
    assert set(BRANCH_DROPS) == {"none", *DROP_MODULES}


@pytest.mark.parametrize("module", [DropPath(0.3), ShakeDrop(0.3)], ids=["path", "shakedrop"])
def test_branch_drop_is_random_in_training_and_its_expectation_in_eval(
        module: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 2, 2) + 0.5
    module.eval()
    assert torch.equal(module(x), module(x))  # eval is deterministic
    expected = module(x)
    module.train()
    first, second = module(x), module(x)
    assert not torch.equal(first, second)
    # One draw per image: within an image every value is scaled alike.
    ratio = first / x
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-6)
    mean = torch.stack([module(x) for _ in range(SAMPLES)]).mean(0)
    assert torch.allclose(mean, expected, atol=0.05 * expected.abs().max().item())


def test_drop_path_keeps_or_drops_whole_images_scaled_by_the_keep_rate() -> None:
    torch.manual_seed(1)
    x = torch.ones(2000, 1, 1, 1)
    out = DropPath(0.25).train()(x)
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.75)))
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert torch.equal(DropPath(0.25).eval()(x), x)


def test_shakedrop_scales_forward_by_alpha_and_backward_by_beta() -> None:
    torch.manual_seed(2)
    x = torch.ones(4000, 1, 1, 1, requires_grad=True)
    out = ShakeDrop(0.5).train()(x)
    out.sum().backward()
    assert x.grad is not None
    forward, backward = out.detach().flatten(), x.grad.flatten()
    kept = forward == 1.0
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.all(backward[kept] == 1.0)
    shaken_f, shaken_b = forward[~kept], backward[~kept]
    assert shaken_f.min() < -0.9 and shaken_f.max() > 0.9  # alpha ~ U[-1, 1]
    assert shaken_b.min() >= 0.0 and shaken_b.max() <= 1.0  # beta ~ U[0, 1]
    assert not torch.allclose(shaken_f, shaken_b)  # independent draws
    assert torch.equal(ShakeDrop(0.5).eval()(x.detach()), 0.5 * x.detach())


@pytest.mark.parametrize("backward", [True, False])
def test_shake_mix_forward_alpha_backward_beta_eval_half(backward: bool) -> None:
    torch.manual_seed(3)
    a = torch.ones(500, 1, 1, 1, requires_grad=True)
    b = torch.zeros(500, 1, 1, 1, requires_grad=True)
    out = shake_mix(a, b, training=True, backward=backward)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    alpha = out.detach()  # a = 1, b = 0: the output is alpha itself
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0 and alpha.std() > 0.2
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a.grad))  # beta and 1 - beta
    assert torch.allclose(a.grad, alpha) is not backward
    assert torch.equal(shake_mix(a, b, training=False), torch.full_like(a, 0.5))
    batch = shake_mix(a, b, training=True, per_image=False).detach()
    assert torch.equal(batch, batch[:1].expand_as(batch))  # one weight for the batch


@pytest.mark.parametrize("branch_drop", ["none", "path", "shakedrop"])
def test_shake_network_differs_between_training_passes_and_not_in_eval(
        branch_drop: str) -> None:
    torch.manual_seed(4)
    model = build_model(shake_net(branch_drop, 0.0 if branch_drop == "none" else 0.3))
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_a_plain_network_in_training_is_deterministic_so_the_check_above_can_fail() -> None:
    torch.manual_seed(5)
    model = build_model(BASELINES["resnet-8-half"]).train()
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(model(x), model(x))


def test_draws_come_from_the_seeded_global_generator() -> None:
    # fit seeds torch's global generators and its checkpoints save their states, so a
    # module drawing from them resumes exactly; a private generator would not.
    model = build_model(shake_net("shakedrop", 0.5)).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(6)
    first = model(x)
    state = torch.get_rng_state()
    second = model(x)
    torch.manual_seed(6)
    assert torch.equal(model(x), first)
    torch.set_rng_state(state)
    assert torch.equal(model(x), second)


def test_bf16_autocast_and_channels_last_train_a_shake_network() -> None:
    torch.manual_seed(7)
    model = build_model(shake_net("shakedrop", 0.5)).to(memory_format=torch.channels_last)
    model.train()
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["shake-shake-26-2x32d", "pyramidnet-56-a48-shakedrop"])
def test_torch_compile_traces_the_random_blocks_without_graph_breaks(name: str) -> None:
    torch._dynamo.reset()
    arch = BASELINES[name]
    if name.startswith("shake"):  # add drop-path too: both kinds of draw in one graph
        arch = ArchConfig.from_dict({**arch.to_dict(), "branch_drop": "path",
                                     "branch_drop_rate": 0.2})
    model = build_model(arch).train()
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_drop_rates_grow_linearly_to_the_last_block() -> None:
    arch = BASELINES["pyramidnet-56-a48-shakedrop"]  # 27 blocks, ShakeDrop to 0.5
    rates = [m.rate for m in build_model(arch, device="meta").modules()
             if isinstance(m, ShakeDrop)]
    assert rates == pytest.approx([0.5 * block / 27 for block in range(1, 28)])
    plain = build_model(BASELINES["wrn-40-2"], device="meta")
    assert not any(isinstance(m, (ShakeDrop, DropPath)) for m in plain.modules())
