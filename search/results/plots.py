"""PNG figures of a run: learning curves and a confusion matrix.

matplotlib is imported inside the functions, with the Agg backend, so that the
CLI starts fast and plotting works on machines without a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainers.safeio import atomic_writer


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically, then close it."""
    plt = _pyplot()
    try:
        with atomic_writer(path) as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_curves(history: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy (train and validation) against epochs, plus the learning rate."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    # Empty where the run had no validation split (val_size = 0): then no validation
    # lines, so that the legend does not promise one.
    scored = [i for i in range(len(history)) if not math.isnan(history[i]["val_acc"])]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    if scored:
        loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    loss_ax.legend(loc="upper right")
    acc_ax.plot(epochs, [100 * r["train_acc"] for r in history], label="train")
    if scored:
        acc_ax.plot(epochs, [100 * r["val_acc"] for r in history], label="validation")
    best = max(scored, key=lambda i: history[i]["val_acc"], default=None)
    if best is not None:  # none where the run had no validation split
        acc_ax.annotate(f"{100 * history[best]['val_acc']:.2f}%",
                        (epochs[best], 100 * history[best]["val_acc"]),
                        textcoords="offset points", xytext=(0, 8), ha="center")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    lr_ax = acc_ax.twinx()  # the schedule explains most bends in the curves
    lr_ax.plot(epochs, [r["lr"] for r in history], color="grey", alpha=0.4, linestyle=":",
               label="learning rate")
    lr_ax.set_ylabel("learning rate", color="grey")
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if len(epochs) < 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across), with counts."""
    plt = _pyplot()
    totals = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted class", ylabel="true class")
    for i in ticks:
        for j in ticks:
            if confusion[i, j]:
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)
