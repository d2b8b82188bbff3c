"""Builder and counters, driven by the block registry, the baselines and seeded random configs.

For every config (hundreds, built on the meta device, so cheap): the analytic
parameter count equals the built model's, and the analytic FLOPs equal PyTorch's
FLOP counter. A training step (finite (N, 10) logits, a non-zero gradient for
every parameter) is costly on CPU, so it runs on a covering set: the few random
configs that, chosen greedily, show every option value the random configs show
(each block type with each kernel, stride, SE and shortcut form, every pooling,
per-stage block overrides, ...). The random configs are drawn over every
registered block type and every kernel and pooling the config admits, so a new
block type or option is trained too, and a block registered with a wrong walk
fails the count.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import BASELINES, ArchConfig, StageConfig, build_model, count_flops, count_params
from models.blocks import BLOCKS, Basic, Block, register_block, unregister_block
from models.config import BRANCH_DROPS, POOL_TYPES
from models.modules import SqueezeExcite
from models.plan import sites
from models.shapes import INPUT_SIZE, KERNEL_SIZES, MAX_WIDTH, Layer, conv_out_size
from models.validate import ConfigError, field_types
from space import load_spec
from tests.conftest import RandomSuggester

N_SPACE_CONFIGS = 200  # within the budget, counted on meta
N_WILD_PER_BLOCK = 60  # per registered block type, anything ArchConfig admits, counted on meta
COVER_TIMES = 3  # configs that must show each option value (or pair of them) when trained
SPACE_BATCH, WILD_BATCH = 2, 4  # images per training step of the two kinds of config
MAX_TRAINED = 90  # the covering set trained one step each; it needs about 70 today


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
        stages.append(StageConfig(rng.randint(1, 3), width, rng.choice(KERNEL_SIZES), stride,
                                  block=own))
    return ArchConfig(
        stages=tuple(stages),
        stem_width=rng.randint(1, 24),
        stem_kernel=rng.choice(KERNEL_SIZES),
        block=default,
        shortcut_kernel=rng.choice(KERNEL_SIZES),
        shortcut_pool=rng.random() < 0.5,
        pool=rng.choice(POOL_TYPES),
        pool_kernel=rng.choice([None, rng.randint(1, size)]),
        se_ratio=rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]),
        dropout=rng.choice([0.0, 0.3]),
        **branch_drop(rng),
    )


def branch_drop(rng: random.Random) -> dict[str, Any]:
    mode = rng.choice(BRANCH_DROPS)
    return {"branch_drop": mode, "branch_drop_rate": 0.0 if mode == "none" else
            rng.choice([0.1, 0.3])}


def wild_configs(block_type: str, n: int = N_WILD_PER_BLOCK) -> list[ArchConfig]:
    return [wild_config(random.Random(f"{block_type}-{seed}"), block_type) for seed in range(n)]


SPACE_CONFIGS = space_configs(N_SPACE_CONFIGS)
Feature = tuple[Hashable, ...]  # one option value a config shows, e.g. ("kernel", "basic", 7)


def block_sites(arch: ArchConfig) -> Iterator[tuple[Block, int, int, str]]:
    """(block, kernel, stride, shortcut form) of every block in ``arch``; the form is
    identity, conv, strided conv, pool+conv, zero-pad or strided zero-pad."""
    for site in sites(arch):
        block, c_in, c_out, stride = site.block, site.c_in, site.c_out, site.stride
        projects = any(block.shortcut_layers(c_in, c_out, stride, site.size, arch))
        form = ("identity" if c_in == c_out and stride == 1 else
                ("conv" if stride == 1 else "pool+conv" if arch.shortcut_pool
                 else "strided conv") if projects else
                "zero-pad" if stride == 1 else "strided zero-pad")
        yield block, site.kernel, stride, form


def features(arch: ArchConfig, *, space: bool = False) -> set[Feature]:
    """The option values ``arch`` exercises when it trains, and the pairs of them that meet
    in one block (a block type's setting with each kernel, say); ``space``: drawn from the
    study's space."""
    window = "global" if arch.pool_kernel is None else "window"
    shown: set[Feature] = {
        ("stages", len(arch.stages)), ("stem kernel", arch.stem_kernel),
        ("network block", arch.block.name),
        ("pool", arch.pool, window), ("pool", window, arch.feature_sizes()[-1] == 1),
        ("dropout", arch.dropout > 0), ("final map 1x1", arch.feature_sizes()[-1] == 1),
        ("branch drop", arch.branch_drop)}
    overrides = {s.block.name for s in arch.stages if s.block is not None}
    shown |= {("stage block override", name) for name in overrides or {None}}
    se = arch.se_ratio > 0
    for block, kernel, stride, form in block_sites(arch):
        name = block.name
        shown |= {("block", name), ("kernel", name, kernel), ("stride", name, stride),
                  ("se", name, se), ("shortcut", name, form), ("kernel", kernel, stride),
                  ("se", se, stride), ("se", se, kernel), ("branch drop", name, arch.branch_drop)}
        for key, value in block.fields().items():
            shown |= {("setting", name, key, value), ("setting", name, key, value, kernel),
                      ("setting", name, key, value, stride), ("setting", name, key, value, se),
                      ("setting", name, key, value, form)}
        if form != "identity":
            shown |= {("shortcut kernel", arch.shortcut_kernel),
                      ("shortcut", form, arch.shortcut_kernel)}
    if space:
        shown.add(("space", arch.block.name))
    return shown


def required_features() -> set[Feature]:
    """What the trained set must show, from the registry and the config's own constants."""
    forms = ("identity", "conv", "strided conv", "pool+conv")
    required: set[Feature] = {("stem kernel", k) for k in KERNEL_SIZES}
    required |= {("shortcut kernel", k) for k in KERNEL_SIZES}
    required |= {("pool", p, g) for p in POOL_TYPES for g in ("global", "window")}
    required |= {(f, v) for f in ("dropout", "final map 1x1") for v in (False, True)}
    required.add(("stage block override", None))
    for name in BLOCKS:
        required |= {("network block", name), ("stage block override", name), ("block", name)}
        required |= {("kernel", name, k) for k in KERNEL_SIZES}
        required |= {("stride", name, s) for s in (1, 2)} | {("se", name, v) for v in (False, True)}
        required |= {("shortcut", name, form) for form in forms}
        required |= {("branch drop", name, mode) for mode in BRANCH_DROPS}
        widening = ArchConfig(stages=(StageConfig(1, 16, stride=2),), stem_width=8,
                              block=BLOCKS[name]())
        if not any(BLOCKS[name]().shortcut_layers(8, 16, 2, 32, widening)):  # zero-padding
            required |= {("shortcut", name, "zero-pad"), ("shortcut", name, "strided zero-pad")}
        required |= {("setting", name, f.name, v) for f in dataclasses.fields(BLOCKS[name])
                     if field_types(BLOCKS[name])[f.name] is bool for v in (False, True)}
    return required


def covering_set(candidates: Sequence[tuple[ArchConfig, int]],
                 times: int = COVER_TIMES) -> list[tuple[ArchConfig, int]]:
    """Greedy set cover: again and again the candidate showing the most values still
    wanted (the cheaper on ties), until every value any candidate shows is shown by
    ``times`` configs (or by all that show it)."""
    shown = [features(arch, space=batch == SPACE_BATCH) for arch, batch in candidates]
    cost = [count_flops(arch) * batch for arch, batch in candidates]
    wanted = Counter(f for s in shown for f in s)
    wanted = Counter({f: min(n, times) for f, n in wanted.items()})
    chosen: list[int] = []
    while wanted:
        best = max((i for i in range(len(candidates)) if i not in chosen),
                   key=lambda i: (len(shown[i] & wanted.keys()), -cost[i]))
        chosen.append(best)
        wanted -= Counter(shown[best])
    return [candidates[i] for i in chosen]


def trained_configs() -> list[tuple[ArchConfig, int]]:
    """(config, batch) pairs trained one step: a covering set of all the random configs."""
    candidates = [(arch, SPACE_BATCH) for arch in SPACE_CONFIGS]
    candidates += [(arch, WILD_BATCH) for name in sorted(BLOCKS) for arch in wild_configs(name)]
    return covering_set(candidates)


TRAINED = trained_configs()


def check_counts(arch: ArchConfig) -> None:
    """The analytic counts of ``arch`` equal the built model's; AssertionError if not.

    Built once on the meta device: no memory, no arithmetic, only shapes.
    """
    model = build_model(arch, device="meta").eval()  # eval: BN accepts a 1x1 map of one image
    assert count_params(arch) == sum(p.numel() for p in model.parameters()), arch.describe()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # forward FLOPs only
        model(torch.empty(1, 3, 32, 32, device="meta"))
    assert count_flops(arch) == counter.get_total_flops(), arch.describe()


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


def check_trains(arch: ArchConfig, seed: int, batch: int = 2, passes: int = 5) -> None:
    """Finite logits and gradients, and a non-zero gradient for every parameter within
    ``passes`` batches (their gradients add up): one small batch may legitimately leave a
    parameter none, where drop-path drops a whole branch. A squeeze-excitation gate whose
    few hidden ReLUs are all shut for every image passes nothing back at all; its
    parameters are let off, and only those of a gate seen shut."""
    torch.manual_seed(seed)
    model = build_model(arch)
    model.train()
    opened: dict[str, bool] = {}  # SE gate -> whether any hidden unit was ever positive

    def watch(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            opened[name] = opened.get(name, False) or bool((output > 0).any())
        return hook

    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcite):
            module.reduce.register_forward_hook(watch(name))
    for _ in range(passes):
        x = torch.randn(batch, 3, 32, 32)
        logits = model(x)
        assert logits.shape == (batch, 10)
        assert torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, torch.arange(batch) % 10).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        shut = tuple(f"{gate}." for gate, was_open in opened.items() if not was_open)
        stuck = [name for name, p in model.named_parameters()
                 if p.grad is not None and not p.grad.abs().sum() > 0
                 and not name.startswith(shut or ("\0",))]
        if not stuck:
            return
    raise AssertionError(f"{stuck[0]} has an all-zero gradient after {passes} batches")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_forward_and_backward(name: str) -> None:
    check_trains(BASELINES[name], seed=0)


def test_the_trained_configs_show_every_option_value() -> None:
    shown = set().union(*(features(a, space=b == SPACE_BATCH) for a, b in TRAINED))
    everything = set().union(*(features(a, space=True) for a in SPACE_CONFIGS),
                             *(features(a) for name in BLOCKS for a in wild_configs(name)))
    assert shown == everything
    assert not required_features() - shown
    for name, cls in BLOCKS.items():  # every setting of every block type, not only its default
        for field in dataclasses.fields(cls):
            assert len({f[3] for f in shown if f[:3] == ("setting", name, field.name)}) > 1
    assert len(TRAINED) <= MAX_TRAINED


@pytest.mark.parametrize("index", range(len(TRAINED)))
def test_config_forward_and_backward(index: int) -> None:
    torch.set_num_threads(2)
    arch, batch = TRAINED[index]
    check_trains(arch, seed=index, batch=batch)


@dataclass(frozen=True)
class ForgetfulBasic(Basic):
    """A throwaway block type whose walk forgets its second conv."""

    name: ClassVar[str] = "forgetful"

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        yield next(iter(super().layers(c_in, c_out, kernel, stride, size)))


def test_a_newly_registered_block_type_is_trained_too() -> None:
    register_block(ForgetfulBasic)
    try:
        trained = trained_configs()
        assert any("forgetful" in {b.name for b in a.stage_blocks()} for a, _ in trained)
        shown = set().union(*(features(a, space=b == SPACE_BATCH) for a, b in trained))
        assert not required_features() - shown
    finally:
        unregister_block("forgetful")


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
