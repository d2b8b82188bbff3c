"""Builder and counters, driven by the baseline registry and seeded random configs.

For every config: the analytic parameter count equals the built model's, the
analytic FLOPs equal PyTorch's FLOP counter, and (for the configs a search can
train) the forward pass gives finite (N, 10) logits and every parameter gets a
gradient.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import BASELINES, ArchConfig, StageConfig, build_model, count_flops, count_params
from models.config import INPUT_SIZE, conv_out_size
from space import load_spec
from tests.conftest import RandomSuggester

N_SPACE_CONFIGS = 200  # within the budget, trained one step each
N_WILD_CONFIGS = 400  # anything ArchConfig admits, counted on the meta device


def space_configs(n: int, seed: int = 0) -> list[ArchConfig]:
    """The first ``n`` within-budget architectures drawn at random from resnet-budget."""
    spec = load_spec("resnet-budget")
    configs: list[ArchConfig] = []
    draw = 0
    while len(configs) < n:
        arch = spec.sample_arch(RandomSuggester(seed * 100_000 + draw))
        draw += 1
        if count_params(arch) <= spec.budget:
            configs.append(arch)
    return configs


def wild_config(rng: random.Random) -> ArchConfig:
    """A small random config using every option, beyond what the built-in space draws."""
    block_type = rng.choice(["basic", "bottleneck"])
    expansion = rng.choice([1, 2, 4])
    stages = []
    size = INPUT_SIZE
    for _ in range(rng.randint(1, 6)):
        stride = rng.choice([1, 2])
        size = conv_out_size(size, stride)
        width = expansion * rng.randint(2, 12)
        stages.append(StageConfig(rng.randint(1, 3), width, rng.choice([1, 3, 5, 7]), stride))
    return ArchConfig(
        stages=tuple(stages),
        stem_width=rng.randint(1, 24),
        stem_kernel=rng.choice([1, 3, 5, 7]),
        block_type=block_type,
        expansion=expansion,
        shortcut_kernel=rng.choice([1, 3, 5]),
        shortcut_pool=rng.random() < 0.5,
        pool=rng.choice(["avg", "max"]),
        pool_kernel=rng.choice([None, rng.randint(1, size)]),
        se_ratio=rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]),
        dropout=rng.choice([0.0, 0.3]),
    )


SPACE_CONFIGS = space_configs(N_SPACE_CONFIGS)
WILD_CONFIGS = [wild_config(random.Random(seed)) for seed in range(N_WILD_CONFIGS)]


def built_count(arch: ArchConfig) -> int:
    return sum(p.numel() for p in build_model(arch, device="meta").parameters())


def counted_flops(arch: ArchConfig) -> int:
    model = build_model(arch, device="meta").eval()  # eval: BN accepts a 1x1 map of one image
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 32, 32, device="meta"))
    return int(counter.get_total_flops())


def test_random_space_configs_cover_the_options() -> None:
    # Guards the sample above: the 200 configs must exercise what the counters handle.
    seen = {(a.block_type, a.shortcut_pool, a.pool, a.pool_kernel is None, a.se_ratio > 0)
            for a in SPACE_CONFIGS}
    assert len(seen) >= 24
    assert {len(a.stages) for a in SPACE_CONFIGS} == {2, 3, 4}
    assert {s.kernel for a in SPACE_CONFIGS for s in a.stages} == {3, 5}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_counts_match_the_built_model(name: str) -> None:
    arch = BASELINES[name]
    assert count_params(arch) == built_count(arch)
    assert count_flops(arch) == counted_flops(arch)


def test_space_config_counts_match_the_built_model() -> None:
    for arch in SPACE_CONFIGS:
        assert count_params(arch) == built_count(arch), arch.describe()
        assert count_flops(arch) == counted_flops(arch), arch.describe()


def test_wild_config_counts_match_the_built_model() -> None:
    for arch in WILD_CONFIGS:
        assert count_params(arch) == built_count(arch), arch
        assert count_flops(arch) == counted_flops(arch), arch


def test_meta_device_allocates_nothing() -> None:
    model = build_model(BASELINES["resnet-443"], device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.arch == BASELINES["resnet-443"]


def test_num_classes_sets_the_output_width() -> None:
    arch = BASELINES["resnet-20"]
    model = build_model(arch, num_classes=100, device="meta")
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 100)
    assert count_params(arch, num_classes=100) == sum(p.numel() for p in model.parameters())


def check_trains(arch: ArchConfig, seed: int, batch: int = 2) -> None:
    torch.manual_seed(seed)
    model = build_model(arch)
    model.train()
    x = torch.randn(batch, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(batch) % 10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_forward_and_backward(name: str) -> None:
    check_trains(BASELINES[name], seed=0)


@pytest.mark.parametrize("chunk", range(4))
def test_space_config_forward_and_backward(chunk: int) -> None:
    torch.set_num_threads(2)
    for i, arch in enumerate(SPACE_CONFIGS[chunk::4]):
        check_trains(arch, seed=i)


def test_wild_config_forward_and_backward() -> None:
    for i, arch in enumerate(WILD_CONFIGS[:100]):
        check_trains(arch, seed=i, batch=4)
