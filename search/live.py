"""What a running search shows in the terminal, read from the store.

On a terminal: a `rich` table redrawn in place (trial, state, epoch (of the trial's,
while it runs), accuracy, size, architecture) under a header with the progress, the
best trial so far, the rate, the elapsed time and an estimate of the time left;
rich fits it to the terminal's width. Elsewhere (a log file, CI): one plain line per
trial as it finishes, with the same header.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from search import record, stopping
from search.results.progress import duration

ROWS = 12  # most recent trials shown


def study_eta(trials: list[FrozenTrial], total: int, workers: int) -> float | None:
    """Seconds until ``total`` trials have finished: the trials left times the median
    wall time of the trials that trained (started and ended), over the workers; None
    before one has."""
    done = sum(record.finished(t) for t in trials)
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
             and t.datetime_start is not None and t.datetime_complete is not None
             and record.N_PARAMS in t.user_attrs and not record.over_budget(t)]
    if not spans:
        return None
    left = max(0, total - done)
    return left * statistics.median(spans) / max(1, workers)


class LiveView:
    """Polls the study and draws; call `update` every few seconds and `close` at the end.

    Args:
        study: the study to show.
        total: the finished trials the search aims at.
        out: where to draw (default stdout); a terminal gets the live table.
        workers: trials that run at once, for the estimate of the time left.
    """

    def __init__(self, study: optuna.Study, total: int, out: TextIO | None = None,
                 workers: int = 1) -> None:
        self.study, self.total, self.workers = study, total, workers
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.start = time.monotonic()
        self.start_done: int | None = None
        self.reported: set[int] = set()
        self.live: Live | None = None
        self._verdict: tuple[int, stopping.Verdict | None] = (-1, None)

    def update(self) -> None:
        try:
            trials = self.study.get_trials(deepcopy=False)
        except Exception as err:  # a database restart must not kill the driver
            self._say(f"(store unavailable: {type(err).__name__})")
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

    def close(self) -> None:
        """Leave the last table on the screen and give the terminal back."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.out, flush=True)

    def header(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> str:
        _, running = record.count_finished(trials)
        best = record.best(trials, 1)
        elapsed = time.monotonic() - self.start
        rate = (len(done) - (self.start_done or 0)) / (elapsed / 3600) if elapsed > 0 else 0.0
        best_text = (f"best {record.value(best[0]):.4f} (#{best[0].number})" if best
                     else "best -")
        eta = study_eta(trials, self.total, max(self.workers, running))
        left = "-" if eta is None else duration(eta)
        return (f"{len(done)}/{self.total} finished, {running} running, {best_text}, "
                f"{rate:.0f} trials/h, elapsed {duration(elapsed)}, about {left} left"
                + self._regret(trials))

    def _regret(self, trials: list[FrozenTrial]) -> str:
        """", regret <= X pts" once Optuna's regret bound can be estimated (refitted only
        when another trial has completed), with "stop?" once it is within the accuracy's
        statistical error (`search.stopping`); "" in a multi-objective study."""
        if len(self.study.directions) > 1:
            return ""
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        if complete != self._verdict[0]:
            self._verdict = (complete, stopping.verdict(trials))
        judged = self._verdict[1]
        if judged is None:
            return ""
        return (f", regret <= {100 * judged.bound:.2f} pts"
                + (f" (within the error, {100 * judged.error:.2f}): stop?" if judged.stop
                   else ""))

    def table(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> Table:
        table = Table(title=f"{self.study.study_name}: {self.header(trials, done)}",
                      title_justify="left", expand=False, box=None, pad_edge=False)
        for name, justify in (("trial", "right"), ("state", "left"), ("epoch", "right"),
                              ("val_acc", "right"), ("params", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column("architecture / reason", overflow="ellipsis", no_wrap=True)
        styles = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan"}
        for trial in trials[-ROWS:]:
            row = record.cells(trial)
            table.add_row(*row, style=styles.get(row[1]))
        return table

    def _draw(self, trials: list[FrozenTrial], done: list[FrozenTrial]) -> None:
        table = self.table(trials, done)
        if self.live is None:
            console = Console(file=self.out, force_terminal=True)
            self.live = Live(table, console=console, auto_refresh=False,
                             vertical_overflow="visible", redirect_stdout=False,
                             redirect_stderr=False)
            self.live.start()
        self.live.update(table, refresh=True)
