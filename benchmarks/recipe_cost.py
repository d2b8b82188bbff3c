"""What each recipe option costs per step: SAM, EMA, augmentations, test-time views.

Side by side in one run, on one device:
  step   one training step of resnet-20 at batch 128 (forward, backward, update) with
         SGD, SAM, SAM every 2nd step, and SGD + EMA;
  batch  augmented batches of 512 from `TrainLoader` (crop + flip, + Cutout,
         + random erasing, + colour jitter, + rotation, + each augmentation policy,
         + RICAP), images/s;
  eval   evaluation images/s with the flip, and with flip + translations.

    python benchmarks/recipe_cost.py [--device cpu|cuda] [--steps 4]

Writes benchmarks/results/recipe-cost-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Callable

import torch
from record import save

from models import BASELINES, build_model
from trainers.augment import TrainLoader, normalize, tta_logits
from trainers.config import TrainConfig
from trainers.ema import ModelEma
from trainers.sam import Sam
from trainers.training import make_optimizer


def timed(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Mean seconds of ``run`` after one untimed call."""
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def step_cost(cfg: TrainConfig, device: torch.device, steps: int, batch: int = 128) -> float:
    torch.manual_seed(0)
    model = build_model(BASELINES["resnet-20"]).to(device).train()
    optimizer = make_optimizer(model, cfg, device)
    sam = Sam(model, optimizer, cfg.sam_rho, cfg.sam_adaptive, cfg.sam_every) \
        if cfg.optimizer == "sam" else None
    ema = ModelEma(model, cfg.ema) if cfg.ema else None
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    counter = [0]

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    def step() -> None:
        counter[0] += 1
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        if sam is not None and sam.due(counter[0]):
            sam.second_pass(loss)
        optimizer.step()
        if ema is not None:
            ema.update()

    return timed(step, steps, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    base = TrainConfig(lr=0.05)
    rows: list[dict[str, object]] = []

    def add(kind: str, variant: str, seconds: float, images: int) -> None:
        rows.append({"kind": kind, "variant": variant, "seconds": round(seconds, 4),
                     "images_per_s": round(images / seconds, 1)})
        print(f"{kind:<6} {variant:<28} {seconds * 1000:>9.1f} ms {images / seconds:>10,.0f} "
              "img/s", flush=True)

    for variant, cfg in (("sgd", base), ("sam", dataclasses.replace(base, optimizer="sam")),
                         ("sam every 2", dataclasses.replace(base, optimizer="sam",
                                                             sam_every=2)),
                         ("sgd + ema 0.999", dataclasses.replace(base, ema=0.999))):
        add("step", variant, step_cost(cfg, device, args.steps), 128)
    images = torch.randint(0, 256, (4096, 32, 32, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (4096,), device=device)
    for variant, cfg in (("crop + flip", TrainConfig(batch_size=512)),
                         ("+ cutout 12", TrainConfig(batch_size=512, cutout=12)),
                         ("+ random erasing 0.5", TrainConfig(batch_size=512, erasing=0.5)),
                         ("+ jitter 0.4", TrainConfig(batch_size=512, jitter=0.4)),
                         ("+ rotate 15", TrainConfig(batch_size=512, rotate=15.0)),
                         ("+ trivialaugment", TrainConfig(batch_size=512,
                                                          policy="trivialaugment")),
                         ("+ randaugment 2 ops, bin 9", TrainConfig(batch_size=512,
                                                                    policy="randaugment")),
                         ("+ autoaugment cifar10", TrainConfig(batch_size=512,
                                                               policy="autoaugment")),
                         ("+ ricap 0.3", TrainConfig(batch_size=512, ricap=0.3))):
        loader = TrainLoader(images, labels, cfg, torch.Generator(device=device).manual_seed(0),
                             random.Random(0))
        add("batch", variant, timed(lambda ld=loader: ld.augment(images[:512], labels[:512]),
                                    10, device), 512)
    model = build_model(BASELINES["resnet-20"]).to(device).eval()
    x = normalize(images[:1000])
    for variant, translate in (("tta flip", 0), ("tta flip + translate 2", 2)):
        with torch.no_grad():
            seconds = timed(lambda t=translate: tta_logits(model, x, flip=True, translate=t),
                            2, device)
        add("eval", variant, seconds, 1000)
    save("recipe_cost", f"recipe-cost-{device.type}", {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "steps": args.steps, "rows": rows},
        torch=torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
