"""Ensembles and distillation at smoke scale on the CPU: does each help, and by how much?

For each seed pair: two teachers (a wider network, different seeds) trained plainly,
their test accuracies and their ensemble's (mean of softmax); then a small student
trained plainly and distilled from that ensemble (alpha 0.9, T 4), same seed, same
recipe. All on a stratified subset of the training images, tested on all 10,000 test
images.

    python benchmarks/distill.py [--data ARCHIVE] [--train-images 5000] [--epochs 8]
                                 [--seeds 2]

Writes benchmarks/results/distill-<device>-<date>.json after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np
import torch
from record import save

from models import ArchConfig, StageConfig, count_params
from trainers.config import TrainConfig
from trainers.data import load_cifar10
from trainers.distill import Teacher
from trainers.inference import predict_logits
from trainers.locate import find_data
from trainers.training import fit

TEACHER = ArchConfig(stages=(StageConfig(1, 32), StageConfig(1, 64, stride=2),
                             StageConfig(1, 128, stride=2)), stem_width=32)
STUDENT = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2),
                             StageConfig(1, 64, stride=2)), stem_width=16)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 archive (default: as `search`)")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    data = load_cifar10(find_data(args.data))
    recipe = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, schedule="onecycle",
                         train_subset=args.train_images, val_size=0, tta_flip=True)
    rows: list[dict[str, Any]] = []

    def test_probs(model: torch.nn.Module) -> np.ndarray:
        return softmax(predict_logits(model, data.test_images, tta_flip=True))

    def accuracy(probs: np.ndarray) -> float:
        return float((probs.argmax(1) == data.test_labels).mean())

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"seed {row['seed']}  {row['what']:<34} test {100 * row['test_acc']:6.2f}%  "
              f"{row.get('seconds', 0):6.1f} s", flush=True)
        save("distill", "distill-cpu", {
            "teacher": TEACHER.describe(), "teacher_params": count_params(TEACHER),
            "student": STUDENT.describe(), "student_params": count_params(STUDENT),
            "recipe": recipe.to_dict(), "rows": rows}, torch=torch.__version__)

    for seed in range(args.seeds):
        members, probs = [], []
        for member in range(2):
            cfg = dataclasses.replace(recipe, seed=100 * seed + member)
            start = time.perf_counter()
            result = fit(TEACHER, cfg, data, device="cpu", log=lambda _: None)
            members.append(result.model)
            probs.append(test_probs(result.model))
            add({"seed": seed, "what": f"teacher {member + 1}", "test_acc": accuracy(probs[-1]),
                 "seconds": time.perf_counter() - start})
        add({"seed": seed, "what": "ensemble of the 2 teachers",
             "test_acc": accuracy((probs[0] + probs[1]) / 2)})
        for what, teacher in (("student, plain", None),
                              ("student, distilled (alpha 0.9, T 4)", Teacher(members))):
            start = time.perf_counter()
            result = fit(STUDENT, dataclasses.replace(recipe, seed=100 * seed + 7), data,
                         device="cpu", log=lambda _: None, teacher=teacher)
            add({"seed": seed, "what": what, "test_acc": accuracy(test_probs(result.model)),
                 "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
