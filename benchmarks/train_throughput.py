"""Training throughput of resnet-443: the fast path against a plain CIFAR script.

fast   trainers.fit: the split on the device as uint8, augmentation as batched
       tensor ops there, bf16 autocast + channels-last + fused optimizer on CUDA.
plain  what most CIFAR scripts do: a DataLoader whose workers crop, flip and
       normalise each image on the CPU, fp32, batch 128.

Images per second count training steps only (the fast path's validation pass is
timed apart), in the last of --epochs epochs, the first ones warming up. Achieved
FLOP/s = images/s x 3 x forward FLOPs (`count_flops`; the backward pass costs
about twice the forward). The ceiling is the device's dense matmul rate, measured
in the same run (bf16 on CUDA, fp32 on CPU).

    python benchmarks/train_throughput.py [--data PATH] [--subset N] [--epochs E]

On CPU keep --subset small (default 512 images); on CUDA the default is the whole
training split. Writes benchmarks/results/train-throughput-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from record import save
from torch.utils.data import DataLoader, Dataset

from models import BASELINES, ArchConfig, build_model, count_flops
from trainers.augment import MEAN, STD
from trainers.config import TrainConfig
from trainers.data import CifarData, load_cifar10
from trainers.training import fit, resolve_device

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def matmul_tflops(device: torch.device, n: int, repeats: int) -> tuple[float, str]:
    """Dense n x n matmul rate: the ceiling the training rate is compared with."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    seconds = time.perf_counter() - start
    return 2 * n**3 * repeats / seconds / 1e12, str(dtype).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PerImageCifar(Dataset):
    """The plain path's data set: numpy pad, crop, flip and normalise, image by image."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        self.images, self.labels = images, labels
        self.rng = np.random.default_rng(seed)
        self.mean = np.array(MEAN, dtype=np.float32)
        self.std = np.array(STD, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.pad(self.images[i], ((4, 4), (4, 4), (0, 0)), mode="reflect")
        y, x = self.rng.integers(0, 9, size=2)
        img = img[y:y + 32, x:x + 32]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        img = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(img.transpose(2, 0, 1).copy()), int(self.labels[i])


def plain_epoch_rate(data: CifarData, n: int, epochs: int, device: torch.device,
                     workers: int, arch: ArchConfig = BASELINES["resnet-443"], *,
                     persistent: bool = False, amp: bool = False) -> float:
    """Images per second of the last of ``epochs`` epochs of ``arch`` through a
    per-image DataLoader, batch 128 (the first epochs warm up): fp32, or with ``amp``
    bf16 autocast and channels-last (CUDA); ``persistent`` keeps the workers alive
    between epochs."""
    torch.manual_seed(0)
    model = build_model(arch).to(device)
    autocast = amp and device.type == "cuda"
    if autocast:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    dataset = PerImageCifar(data.train_images[:n], data.train_labels[:n], seed=0)
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=workers,
                        drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=persistent and workers > 0)
    model.train()
    rate = 0.0
    for _ in range(epochs):
        seen = 0
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if autocast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()  # what a typical script's logging costs: a sync per step
            seen += len(y)
        _sync(device)
        rate = seen / (time.perf_counter() - start)
    return rate


def fast_rates(data: CifarData, n: int, n_val: int, batch: int, epochs: int,
               device: torch.device, compile_model: bool) -> dict[str, float]:
    """The fast path through `fit`; the last epoch's figures (the first warms up)."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=0.2, train_subset=n, val_size=n_val,
                      tta_flip=True, compile=compile_model, cutout=8)
    rows: list[dict[str, float]] = []
    fit(BASELINES["resnet-443"], cfg, data, device=device,
        report=lambda _, m: rows.append(m) and False, log=lambda _: None)
    last = rows[-1]
    steps_images = last["images_per_s"]
    return {"images_per_s": steps_images,
            "seconds_per_epoch_train": n // min(batch, n) * min(batch, n) / steps_images,
            "seconds_per_epoch_with_validation": last["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--device", default=None)
    parser.add_argument("--subset", type=int, default=None,
                        help="training images (default: 512 on CPU, 45,000 on CUDA)")
    parser.add_argument("--val", type=int, default=None,
                        help="validation images (default: 200 on CPU, 5,000 on CUDA)")
    parser.add_argument("--batch", type=int, default=None,
                        help="fast path batch size (default: 128 on CPU, where larger batches "
                        "run slower, 512 on CUDA); the plain path always uses 128")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_cifar10(args.data, progress=lambda m: print(m, file=sys.stderr))
    n = args.subset or (512 if device.type == "cpu" else 45_000)
    n_val = args.val or (200 if device.type == "cpu" else 5_000)
    batch = args.batch or (128 if device.type == "cpu" else 512)
    flops = 3 * count_flops(BASELINES["resnet-443"])
    ceiling, ceiling_dtype = matmul_tflops(device, 8192 if device.type == "cuda" else 2048,
                                           50 if device.type == "cuda" else 30)
    print(f"matmul ceiling: {ceiling:.2f} TFLOP/s ({ceiling_dtype})", file=sys.stderr)

    fast = fast_rates(data, n, n_val, batch, args.epochs, device, args.compile)
    plain_rate = plain_epoch_rate(data, n, args.epochs, device, args.workers)
    results: dict[str, dict[str, float]] = {"fast": fast, "plain": {
        "images_per_s": plain_rate, "seconds_per_epoch_train": n // 128 * 128 / plain_rate}}
    for row in results.values():
        row["achieved_tflops"] = row["images_per_s"] * flops / 1e12
        row["fraction_of_matmul"] = row["achieved_tflops"] / ceiling

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    print(f"{'path':<6} {'images/s':>10} {'s/epoch':>9} {'TFLOP/s':>9} {'of matmul':>10}")
    for path, row in results.items():
        print(f"{path:<6} {row['images_per_s']:>10.1f} {row['seconds_per_epoch_train']:>9.2f} "
              f"{row['achieved_tflops']:>9.4f} {100 * row['fraction_of_matmul']:>9.1f}%")
    speedup = fast["images_per_s"] / plain_rate
    print(f"speedup (fast / plain images/s): {speedup:.2f}x")

    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    save("train_throughput", f"train-throughput-{slug}", {
        "device": name, "device_type": device.type,
        "arch": "resnet-443", "train_images": n, "val_images": n_val, "epochs": args.epochs,
        "fast_batch_size": batch, "plain_batch_size": 128,
        "flops_per_train_image": flops,
        "matmul_tflops": ceiling, "matmul_dtype": ceiling_dtype,
        **results, "speedup": speedup,
    }, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
