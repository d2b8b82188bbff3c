"""What each block type costs to train: one epoch per baseline, forward + backward.

For every registered baseline (or those named with --only), times SGD steps at
batch 128 on random 32x32 images after --warmup untimed steps, and reports the
seconds per step, images/s, an epoch of the 45,000-image training split in
seconds, that epoch's seconds per million parameters and per forward GFLOP, and
the FLOP rate achieved (3 x forward FLOPs per image, as `count_flops` counts them).
On CUDA the step runs as `fit` runs it: bf16 autocast and channels-last.

    python benchmarks/block_cost.py [--device cpu|cuda] [--steps 2] [--warmup 1]
                                    [--batch 128] [--only NAME,NAME]

Writes benchmarks/results/block-cost-<device>-<date>.json, a row at a time (a
long CPU run that is stopped keeps what it measured).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import torch
from record import RESULTS, save, today

from models import BASELINES, build_model, count_flops, count_params

EPOCH_IMAGES = 45_000  # the training split: 50,000 less the 5,000 validation images


def step_seconds(name: str, device: torch.device, batch: int, steps: int, warmup: int) -> float:
    """Mean wall seconds of one SGD step of baseline ``name`` at ``batch`` images."""
    torch.manual_seed(0)
    model = build_model(BASELINES[name]).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--only", default="", help="comma-separated baseline names")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = [n for n in args.only.split(",") if n] or list(BASELINES)
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        parser.error(f"--only: unknown baseline {unknown[0]!r} (known: {', '.join(BASELINES)})")
    fields: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps,
        "warmup": args.warmup, "epoch_images": EPOCH_IMAGES, "rows": []}
    rows: list[dict[str, object]] = fields["rows"]  # type: ignore[assignment]
    print(f"{'baseline':<28} {'block':<19} {'params':>10} {'GFLOPs':>7} {'s/step':>7} "
          f"{'img/s':>7} {'s/epoch':>8} {'s/ep/Mparam':>11} {'s/ep/GFLOP':>10} {'TFLOP/s':>8}")
    stem = f"block-cost-{device.type}"
    for name in names:
        arch = BASELINES[name]
        seconds = step_seconds(name, device, args.batch, args.steps, args.warmup)
        params, flops = count_params(arch), count_flops(arch)
        epoch = seconds * EPOCH_IMAGES / args.batch
        row = {"baseline": name, "block": arch.block.name, "params": params,
               "forward_gflops": round(flops / 1e9, 3), "seconds_per_step": round(seconds, 4),
               "images_per_s": round(args.batch / seconds, 1),
               "epoch_seconds": round(epoch, 2),
               "epoch_seconds_per_mparam": round(epoch / (params / 1e6), 2),
               "epoch_seconds_per_gflop": round(epoch / (flops / 1e9), 2),
               "achieved_tflops": round(3 * flops * args.batch / seconds / 1e12, 3)}
        rows.append(row)
        print(f"{name:<28} {arch.block.name:<19} {params:>10,} {flops / 1e9:>7.2f} "
              f"{seconds:>7.3f} {row['images_per_s']:>7} {epoch:>8.1f} "
              f"{row['epoch_seconds_per_mparam']:>11} {row['epoch_seconds_per_gflop']:>10} "
              f"{row['achieved_tflops']:>8}", flush=True)
        # Saved after every row: a long CPU run that is stopped keeps what it measured.
        with contextlib.redirect_stdout(io.StringIO()):
            save("block_cost", stem, fields, torch=torch.__version__)
    print(f"saved {RESULTS / f'{stem}-{today()}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
