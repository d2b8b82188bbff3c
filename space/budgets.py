"""What a study's architectures must stay within, and what each costs.

A study file's ``[study]`` table may set any of:

- ``budget``: trainable parameters (counted, microseconds);
- ``flops_budget``: forward FLOPs of one 32x32 image (counted);
- ``latency_budget_ms``: the forward pass of a batch of ``latency_batch`` images in
  eval mode on the worker's device (measured: median of 5 after 2 warm-ups);
- ``memory_budget_mb``: peak CUDA memory of one training step (forward and backward,
  bf16 autocast) at ``memory_batch`` images (measured; CUDA only).

All must hold. Measured costs are measured once per architecture and device: a `Meter`
keeps them in memory and, once bound to a study, in the study's store (system
attributes named ``cost:<budget>:<device and batch>:<architecture digest>``), so that a
second trial of the same architecture, another worker or a later run reuses them.

Nothing here imports torch until a measurement is made.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from space.sampler import Budget

if TYPE_CHECKING:
    from models.config import ArchConfig

# [study] key: the budget's name in trial records and constraints.
BUDGET_NAMES = {"budget": "parameters", "flops_budget": "flops",
                "latency_budget_ms": "latency_ms", "memory_budget_mb": "memory_mb"}
CACHE_PREFIX = "cost:"


@dataclass(frozen=True)
class Limits:
    """A study's budgets; None: not limited."""

    parameters: int
    flops: int | None = None
    latency_ms: float | None = None
    latency_batch: int = 64
    memory_mb: float | None = None
    memory_batch: int = 512

    def measured(self) -> bool:
        return self.latency_ms is not None or self.memory_mb is not None

    def describe(self) -> str:
        """``5,000,000 parameters, 300,000,000 FLOPs, latency 4 ms (batch 64)``."""
        parts = [f"{self.parameters:,} parameters"]
        if self.flops is not None:
            parts.append(f"{self.flops:,} FLOPs")
        if self.latency_ms is not None:
            parts.append(f"latency {self.latency_ms:g} ms (batch {self.latency_batch})")
        if self.memory_mb is not None:
            parts.append(f"training memory {self.memory_mb:g} MB (batch {self.memory_batch})")
        return ", ".join(parts)


class Meter:
    """A measured cost of an architecture, cached in memory and, once bound, in the store.

    Attributes:
        measured: how many measurements this process made (the rest came from a cache).
    """

    def __init__(self, name: str, measure: Callable[[ArchConfig], float], tag: str) -> None:
        self.name, self._measure, self.tag = name, measure, tag
        self._cache: dict[str, float] = {}
        self._store: tuple[Any, int] | None = None
        self.measured = 0

    def bind(self, study: Any) -> None:
        """Read and write the figures through ``study``'s store from now on."""
        self._store = (study._storage, study._study_id)

    def key(self, arch: ArchConfig) -> str:
        digest = hashlib.sha256(arch.to_json().encode()).hexdigest()[:16]
        return f"{CACHE_PREFIX}{self.name}:{self.tag}:{digest}"

    def __call__(self, arch: ArchConfig) -> float:
        key = self.key(arch)
        if key in self._cache:
            return self._cache[key]
        if self._store is not None:
            storage, study_id = self._store
            stored = storage.get_study_system_attrs(study_id).get(key)
            if isinstance(stored, (int, float)):
                self._cache[key] = float(stored)
                return float(stored)
        value = float(self._measure(arch))
        self.measured += 1
        self._cache[key] = value
        if self._store is not None:
            storage, study_id = self._store
            storage.set_study_system_attr(study_id, key, value)
        return value


def latency_ms(arch: ArchConfig, device: str, batch: int, repeats: int = 5) -> float:
    """Median milliseconds of a forward pass of ``batch`` images in eval mode."""
    import torch

    from models import build_model

    dev = torch.device(device)
    model = build_model(arch).to(dev).eval()
    x = torch.randn(batch, 3, 32, 32, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                         enabled=dev.type == "cuda"):
        for i in range(2 + repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def training_memory_mb(arch: ArchConfig, device: str, batch: int) -> float:
    """Peak CUDA memory (MiB) of one training step at ``batch`` images."""
    import torch

    from models import build_model

    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"memory_budget_mb is measured on CUDA, and this worker's device is "
                         f"{dev.type}")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    model = build_model(arch).to(dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(batch, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    peak = torch.cuda.max_memory_allocated(dev) - before
    del model, x, loss
    torch.cuda.empty_cache()
    return peak / 2**20


def make_budgets(limits: Limits, device: str | None = None) -> tuple[list[Budget], list[Meter]]:
    """The `Budget` list for ``limits`` (cheapest first) and the meters among them.

    Raises:
        ValueError: a measured budget without a device to measure on, or a memory
            budget on a device other than CUDA.
    """
    from models import count_flops, count_params

    budgets = [Budget("parameters", count_params, limits.parameters)]
    if limits.flops is not None:
        budgets.append(Budget("flops", count_flops, limits.flops))
    meters: list[Meter] = []
    if limits.measured() and device is None:
        raise ValueError("latency and memory budgets are measured on the worker's device, "
                         "and none was given")
    if limits.latency_ms is not None:
        assert device is not None
        meters.append(Meter("latency_ms", lambda a: latency_ms(a, device, limits.latency_batch),
                            f"{_device_name(device)}:b{limits.latency_batch}"))
        budgets.append(Budget("latency_ms", meters[-1], limits.latency_ms))
    if limits.memory_mb is not None:
        assert device is not None
        if not device.startswith("cuda"):
            raise ValueError(f"memory_budget_mb is measured on CUDA, and this worker's device "
                             f"is {device}")
        meters.append(Meter("memory_mb",
                            lambda a: training_memory_mb(a, device, limits.memory_batch),
                            f"{_device_name(device)}:b{limits.memory_batch}"))
        budgets.append(Budget("memory_mb", meters[-1], limits.memory_mb))
    return budgets, meters


def _device_name(device: str) -> str:
    """The device, as the cache keys name it: the card's model on CUDA (another card of
    the same model shares the figures), else the device type."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device).replace(" ", "_").replace(":", "_")
    return device


def excess(budget: Budget, cost: float) -> float:
    """The constraint value Optuna gets: the cost's excess over the limit, relative (<= 0:
    within), so that budgets in different units weigh alike."""
    return (cost - budget.limit) / budget.limit
