"""What a running search shows in the terminal, read from the store.

On a terminal: a table redrawn in place (trial, state, epoch, accuracy, size,
architecture) under a header with the progress, the best trial so far and the
rate. Elsewhere (a log file, CI): one line per trial as it finishes.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial

from search import record

ROWS = 12  # most recent trials shown


class LiveView:
    """Polls the study and draws; call `update` every few seconds and once at the end."""

    def __init__(self, study: optuna.Study, total: int, out: TextIO | None = None) -> None:
        self.study, self.total = study, total
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.start = time.monotonic()
        self.start_done: int | None = None
        self.drawn = 0
        self.reported: set[int] = set()

    def update(self) -> None:
        try:
            trials = self.study.get_trials(deepcopy=False)
        except Exception as err:  # a database restart must not kill the driver
            print(f"(store unavailable: {type(err).__name__})", file=self.out, flush=True)
            return
        done = [t for t in trials if record.finished(t)]
        if self.start_done is None:
            self.start_done = len(done)
        if self.tty:
            self._draw(trials, done)
        else:
            for t in done:
                if t.number not in self.reported:
                    self.reported.add(t.number)
                    print(record.describe(t) + f"   | {self.header(trials, done)}", file=self.out,
                          flush=True)

    def header(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> str:
        _, running = record.count_finished(trials)
        best = record.best(trials, 1)
        hours = (time.monotonic() - self.start) / 3600
        rate = (len(done) - (self.start_done or 0)) / hours if hours > 0 else 0.0
        best_text = (f"best {record.value(best[0]):.4f} (#{best[0].number})" if best
                     else "best -")
        return (f"{len(done)}/{self.total} finished, {running} running, {best_text}, "
                f"{rate:.0f} trials/h")

    def _draw(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> None:
        elapsed = int(time.monotonic() - self.start)
        lines = [f"{self.study.study_name}: {self.header(trials, done)}, "
                 f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
                 record.HEADER]
        lines += [record.describe(t) for t in trials[-ROWS:]]
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the top of the last draw
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)
