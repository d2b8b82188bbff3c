"""Progress of a long training run: a bar per epoch on a terminal, plain lines in logs."""

from __future__ import annotations

import math
import time
from typing import TextIO

BAR = 28  # characters of the bar
REDRAW_S = 0.2  # seconds between redraws of the bar


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 75 -> '1m15s', 4.2 -> '4.2s'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """One epoch's metrics as a line of a log (a run without a validation split says so)."""
    width = len(str(epochs))
    val = ("no validation split" if math.isnan(metrics["val_acc"]) else
           f"val loss {metrics['val_loss']:.4f} acc {100 * metrics['val_acc']:6.2f}%")
    return (f"epoch {int(metrics['epoch']):>{width}}/{epochs}  "
            f"train loss {metrics['train_loss']:.4f} acc {100 * metrics['train_acc']:6.2f}%  "
            f"{val}  lr {metrics['lr']:.4g}  {duration(metrics['seconds'])}  "
            f"{metrics['images_per_s']:,.0f} img/s")


class EpochProgress:
    """Feeds on `trainers.fit`'s ``on_step`` and ``report`` hooks.

    On a terminal each epoch gets a bar that fills step by step and is replaced by
    the epoch's line when it ends; elsewhere (a log file, a pipe, a Ray worker) only
    the epoch lines are written, so logs stay readable.
    """

    def __init__(self, epochs: int, stream: TextIO, tty: bool | None = None) -> None:
        self.epochs = epochs
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.epoch_start = time.monotonic()
        self.last_draw = 0.0
        self.epoch_seconds: list[float] = []
        self.drawn = False

    def step(self, epoch: int, step: int, steps: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if step == 1:
            self.epoch_start = now
        if now - self.last_draw < REDRAW_S and step < steps:
            return
        self.last_draw = now
        done = round(BAR * step / max(1, steps))
        elapsed = now - self.epoch_start
        left = elapsed / step * (steps - step)
        if self.epoch_seconds:  # whole epochs still to come, at the average pace so far
            per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
            left += per_epoch * (self.epochs - epoch)
        width = len(str(self.epochs))
        self.stream.write(f"\r\x1b[2Kepoch {epoch:>{width}}/{self.epochs} "
                          f"[{'#' * done}{'.' * (BAR - done)}] {step}/{steps}  "
                          f"{duration(elapsed)}  eta {duration(left)}")
        self.stream.flush()
        self.drawn = True

    def epoch(self, metrics: dict[str, float]) -> None:
        self.epoch_seconds.append(metrics["seconds"])
        prefix = "\r\x1b[2K" if self.tty and self.drawn else ""
        self.stream.write(prefix + epoch_line(metrics, self.epochs) + "\n")
        self.stream.flush()
        self.drawn = False

    def close(self) -> None:
        """End a half-drawn bar (an interrupt) with a newline."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
