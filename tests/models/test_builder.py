"""Builder and counters, driven by the block registry, the baselines and seeded random configs.

For every config: the analytic parameter count equals the built model's, the
analytic FLOPs equal PyTorch's FLOP counter, and (for the configs a search can
train) the forward pass gives finite (N, 10) logits and every parameter gets a
gradient. The random configs are drawn over every registered block type, with
per-stage types mixed, so a block registered with a wrong walk fails here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import BASELINES, ArchConfig, StageConfig, build_model, count_flops, count_params
from models.blocks import BLOCKS, Basic, Block, register_block, unregister_block
from models.shapes import INPUT_SIZE, MAX_WIDTH, Layer, conv_out_size
from models.validate import ConfigError, field_types
from space import load_spec
from tests.conftest import RandomSuggester

N_SPACE_CONFIGS = 200  # within the budget, trained one step each
N_WILD_PER_BLOCK = 200  # per registered block type, anything ArchConfig admits, on meta
N_TRAINED_PER_BLOCK = 50  # of those, trained one step each


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


def random_block(rng: random.Random, cls: type[Block]) -> Block:
    """Block type ``cls`` with settings drawn around their defaults (defaults if refused)."""
    settings: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        options = {int: [f.default, 1, 2, 4], float: [f.default, 0.0, 0.25, 0.5],
                   bool: [True, False]}.get(tp, [f.default])
        settings[f.name] = rng.choice(options)
    try:
        return cls(**settings)
    except ConfigError:
        return cls()


def fitting_width(rng: random.Random, block: Block) -> int:
    """A random small width ``block`` accepts."""
    start = rng.randint(8, 48)  # bottleneck inner widths of 1 can have all-zero BN gradients
    return next(w for w in range(start, MAX_WIDTH + 1) if block.check_width(w) is None)


def wild_config(rng: random.Random, block_type: str) -> ArchConfig:
    """A small random config of ``block_type`` using every option, stages mixing in others."""
    default = random_block(rng, BLOCKS[block_type])
    stages = []
    size = INPUT_SIZE
    for _ in range(rng.randint(1, 6)):
        stride = rng.choice([1, 2])
        size = conv_out_size(size, stride)
        own = random_block(rng, BLOCKS[rng.choice(sorted(BLOCKS))]) if rng.random() < 0.3 else None
        width = fitting_width(rng, own or default)
        stages.append(StageConfig(rng.randint(1, 3), width, rng.choice([1, 3, 5, 7]), stride,
                                  block=own))
    return ArchConfig(
        stages=tuple(stages),
        stem_width=rng.randint(1, 24),
        stem_kernel=rng.choice([1, 3, 5, 7]),
        block=default,
        shortcut_kernel=rng.choice([1, 3, 5]),
        shortcut_pool=rng.random() < 0.5,
        pool=rng.choice(["avg", "max"]),
        pool_kernel=rng.choice([None, rng.randint(1, size)]),
        se_ratio=rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]),
        dropout=rng.choice([0.0, 0.3]),
    )


def wild_configs(block_type: str, n: int = N_WILD_PER_BLOCK) -> list[ArchConfig]:
    return [wild_config(random.Random(f"{block_type}-{seed}"), block_type) for seed in range(n)]


SPACE_CONFIGS = space_configs(N_SPACE_CONFIGS)


def built_count(arch: ArchConfig) -> int:
    return sum(p.numel() for p in build_model(arch, device="meta").parameters())


def counted_flops(arch: ArchConfig) -> int:
    model = build_model(arch, device="meta").eval()  # eval: BN accepts a 1x1 map of one image
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 32, 32, device="meta"))
    return int(counter.get_total_flops())


def check_counts(arch: ArchConfig) -> None:
    """The analytic counts of ``arch`` equal the built model's; AssertionError if not."""
    assert count_params(arch) == built_count(arch), arch.describe()
    assert count_flops(arch) == counted_flops(arch), arch.describe()


def test_random_space_configs_cover_the_options() -> None:
    # Guards the sample above: the 200 configs must exercise what the counters handle.
    seen = {(a.block.name, a.shortcut_pool, a.pool, a.pool_kernel is None, a.se_ratio > 0)
            for a in SPACE_CONFIGS}
    assert len(seen) >= 24
    assert {len(a.stages) for a in SPACE_CONFIGS} == {2, 3, 4}
    assert {s.kernel for a in SPACE_CONFIGS for s in a.stages} == {3, 5}


@pytest.mark.parametrize("block_type", sorted(BLOCKS))
def test_wild_configs_cover_every_block_type_and_mixed_stages(block_type: str) -> None:
    configs = wild_configs(block_type)
    used = {b.name for a in configs for b in a.stage_blocks()}
    assert used == set(BLOCKS)
    assert sum(len(set(a.stage_blocks())) > 1 for a in configs) >= len(configs) // 5
    assert sum(a.block != BLOCKS[block_type]() for a in configs) > 0 or not field_types(
        BLOCKS[block_type])  # settings other than the defaults are drawn too


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_counts_match_the_built_model(name: str) -> None:
    check_counts(BASELINES[name])


def test_space_config_counts_match_the_built_model() -> None:
    for arch in SPACE_CONFIGS:
        check_counts(arch)


@pytest.mark.parametrize("block_type", sorted(BLOCKS))
def test_wild_config_counts_match_the_built_model(block_type: str) -> None:
    for arch in wild_configs(block_type):
        check_counts(arch)


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


@pytest.mark.parametrize("block_type", sorted(BLOCKS))
def test_wild_config_forward_and_backward(block_type: str) -> None:
    torch.set_num_threads(2)
    for i, arch in enumerate(wild_configs(block_type, N_TRAINED_PER_BLOCK)):
        check_trains(arch, seed=i, batch=4)


@dataclass(frozen=True)
class ForgetfulBasic(Basic):
    """A throwaway block type whose walk forgets its second conv."""

    name: ClassVar[str] = "forgetful"

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        yield next(iter(super().layers(c_in, c_out, kernel, stride, size)))


def test_a_block_registered_with_a_wrong_walk_fails_the_count_check() -> None:
    register_block(ForgetfulBasic)
    try:
        assert "forgetful" in BLOCKS
        configs = wild_configs("forgetful", 6)
        for arch in configs:
            with pytest.raises(AssertionError):
                check_counts(arch)
    finally:
        unregister_block("forgetful")
    assert "forgetful" not in BLOCKS


def test_register_block_refuses_a_taken_name_and_a_non_block() -> None:
    with pytest.raises(ValueError, match="'basic' is already registered"):
        register_block(Basic)
    with pytest.raises(ValueError, match="frozen dataclass subclassing Block"):
        register_block(StageConfig)  # type: ignore[arg-type]
