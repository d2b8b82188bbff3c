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
from optuna.trial import FrozenTrial, TrialState

from search.worker import finished

ROWS = 12  # most recent trials shown


def fmt_params(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def describe(trial: FrozenTrial) -> str:
    """One line per trial: number, state, epochs, accuracy, size, architecture or reason."""
    attrs = trial.user_attrs
    acc = trial.value if trial.value is not None else (
        trial.intermediate_values[max(trial.intermediate_values)]
        if trial.intermediate_values else None)
    acc_text = f"{acc:.4f}" if acc is not None else "-"
    tail = (attrs.get("rejected_reason") or attrs.get("fail_reason")
            or attrs.get("arch_summary") or "")
    if "baseline" in attrs:
        tail = f"[{attrs['baseline']}] {tail}"
    if "promoted_test_acc" in attrs:  # `search promote` trained it in full
        tail = f"(promoted: test {100 * float(attrs['promoted_test_acc']):.2f}%) {tail}"
    return (f"{trial.number:>5} {trial.state.name:<8} {len(trial.intermediate_values):>5} "
            f"{acc_text:>8} {fmt_params(attrs.get('n_params')):>7}  {tail[:70]}")


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
        done = [t for t in trials if finished(t)]
        if self.start_done is None:
            self.start_done = len(done)
        if self.tty:
            self._draw(trials, done)
        else:
            for t in done:
                if t.number not in self.reported:
                    self.reported.add(t.number)
                    print(describe(t) + f"   | {self.header(trials, done)}", file=self.out,
                          flush=True)

    def header(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> str:
        running = sum(t.state == TrialState.RUNNING for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        best = max(complete, key=lambda t: t.value or 0.0, default=None)
        hours = (time.monotonic() - self.start) / 3600
        rate = (len(done) - (self.start_done or 0)) / hours if hours > 0 else 0.0
        best_text = f"best {best.value:.4f} (#{best.number})" if best else "best -"
        return (f"{len(done)}/{self.total} finished, {running} running, {best_text}, "
                f"{rate:.0f} trials/h")

    def _draw(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> None:
        elapsed = int(time.monotonic() - self.start)
        lines = [f"{self.study.study_name}: {self.header(trials, done)}, "
                 f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
                 f"{'trial':>5} {'state':<8} {'epoch':>5} {'val_acc':>8} {'params':>7}  "
                 "architecture / reason"]
        lines += [describe(t) for t in trials[-ROWS:]]
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the top of the last draw
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)
