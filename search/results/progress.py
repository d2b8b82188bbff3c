"""Progress of a long training run: a bar per epoch on a terminal, plain lines in logs."""

from __future__ import annotations

import math
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

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

    On a terminal each epoch gets a `rich` progress bar (steps, elapsed time, and the
    time left for the whole run: this epoch's rest at its pace, then the epochs to come
    at the average so far) under the lines of the epochs before it; elsewhere (a log
    file, a pipe, a Ray worker) only the epoch lines are written, so logs stay readable.
    """

    def __init__(self, epochs: int, stream: TextIO, tty: bool | None = None) -> None:
        self.epochs = epochs
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.epoch_start = time.monotonic()
        self.last_draw = 0.0
        self.epoch_seconds: list[float] = []
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def _start(self) -> Progress:
        if self.bar is None:
            console = Console(file=self.stream, force_terminal=True)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=BAR),
                                MofNCompleteColumn(), TextColumn("{task.fields[times]}"),
                                console=console, auto_refresh=False, transient=True,
                                redirect_stdout=False, redirect_stderr=False)
            self.bar.start()
        return self.bar

    def step(self, epoch: int, step: int, steps: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if step == 1:
            self.epoch_start = now
        if now - self.last_draw < REDRAW_S and step < steps:
            return
        self.last_draw = now
        elapsed = now - self.epoch_start
        left = elapsed / step * (steps - step)
        if self.epoch_seconds:  # whole epochs still to come, at the average pace so far
            per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
            left += per_epoch * (self.epochs - epoch)
        width = len(str(self.epochs))
        bar = self._start()
        description = f"epoch {epoch:>{width}}/{self.epochs}"
        times = f"{duration(elapsed)}  eta {duration(left)}"
        if self.task is None:
            self.task = bar.add_task(description, total=steps, times=times)
        bar.update(self.task, description=description, total=steps, completed=step,
                   times=times)
        bar.refresh()

    def epoch(self, metrics: dict[str, float]) -> None:
        self.epoch_seconds.append(metrics["seconds"])
        line = epoch_line(metrics, self.epochs)
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
            if self.task is not None:
                self.bar.reset(self.task, total=None, times="")
            self.bar.refresh()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Take the bar off the screen (an interrupt, or the end of the run)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            self.task = None
