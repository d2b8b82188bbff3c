"""A store made by a real `search run`: the pruner stops weak trials, and `search trials`,
`best`, `report` and the live view show what the workers wrote.

The search runs the real worker (local executor), the study file's real median pruner
and a real SQLite file. Its trainer, `tests.search.trainers.weak_at_low_lr`, trains
nothing: it reports a learning curve by learning rate through the worker's report
callback, flat at chance for one of the two rates. The tests read the store by the
attribute names spelled out here, not through `search.record`, so that renaming an
attribute the workers write fails a test.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.cli import main
from search.live import LiveView
from tests.conftest import SHARED_ARCHIVE
from tests.search.test_report import table_rows
from tests.search.test_service import smoke_file
from tests.search.trainers import WEAK_LR

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it
EPOCHS = 3
N_TRIALS = 10
PRUNER_STARTUP = 2  # the smoke study's median pruner: n_startup_trials


@dataclass(frozen=True)
class Searched:
    study: Path  # the study file
    url: str
    trials: list[FrozenTrial]
    output: str  # what `search run` printed

    def store_args(self) -> list[str]:
        return ["--study", str(self.study), "--storage", self.url]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    tmp = tmp_path_factory.mktemp("real-store")
    study = smoke_file(tmp, **{
        "epochs = [1, 2]": f"epochs = {EPOCHS}",
        "lr = { low = 0.01, high = 0.2, log = true }": f"lr = [{WEAK_LR}, 0.1]",
        # Random proposals, over-budget ones kept: weak trials keep coming, and some
        # proposals are rejected (PRUNED too, but not by the pruner).
        'type = "tpe"\nn_startup_trials = 4': 'type = "random"\nbudget_aware = false'})
    url = f"sqlite:///{tmp / 'study.db'}"
    # The first trials in a fixed order, the rest drawn: two strong ones complete (the
    # median pruner's startup), then weak ones come, which the pruner must stop at
    # epoch 1. Random draws alone could complete weak trials first and leave the
    # median at chance, where nothing is below it.
    first = optuna.create_study(study_name="smoke", storage=url, directions=["maximize"])
    for lr in (0.1, 0.1, WEAK_LR, WEAK_LR):
        first.enqueue_trial({"lr": lr})
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # runs/ (logs) goes there, not into the checkout
        code = main(["run", "--study", str(study), "--storage", url, "--n-trials",
                     str(N_TRIALS), "--workers", "1", "--executor", "local", "--data",
                     str(SHARED_ARCHIVE), "--device", "cpu", "--seed", "0",
                     "--trainer", "tests.search.trainers:weak_at_low_lr"])
    assert code == 0, out.getvalue()
    trials = optuna.load_study(study_name="smoke", storage=url).get_trials()
    return Searched(study, url, trials, out.getvalue())


def rejected(t: FrozenTrial) -> bool:
    return t.state == TrialState.PRUNED and "rejected_reason" in t.user_attrs


def complete_best_first(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return sorted(done, key=lambda t: (-(t.value or 0.0), t.number))


def check_row(line: str, trials: list[FrozenTrial]) -> FrozenTrial:
    """A trial's line (trials, best, live view) against the raw store; the trial."""
    number, state, epochs, acc, params, tail = line.split(maxsplit=5)
    t = trials[int(number)]
    assert state == t.state.name, line
    assert int(epochs) == len(t.intermediate_values), line
    if t.state == TrialState.COMPLETE:
        assert acc == f"{t.value:.4f}", line
    elif t.intermediate_values:  # pruned by the pruner: its last epoch
        assert acc == f"{t.intermediate_values[max(t.intermediate_values)]:.4f}", line
    else:
        assert acc == "-", line
    assert params == f"{t.user_attrs['n_params'] / 1e3:.0f}k", line
    if rejected(t):
        assert t.user_attrs["rejected_reason"].startswith(tail), line
        return t
    if "baseline" in t.user_attrs:
        prefix = f"[{t.user_attrs['baseline']}] "
        assert tail.startswith(prefix), line
        tail = tail.removeprefix(prefix)
    assert len(tail) > 20 and t.user_attrs["arch_summary"].startswith(tail), line
    return t


# -- the pruner ----------------------------------------------------------------------------


def test_the_pruner_stops_weak_trials_before_their_last_epoch(searched: Searched) -> None:
    trials = searched.trials
    by_pruner = [t for t in trials if t.state == TrialState.PRUNED and not rejected(t)]
    early = [t for t in by_pruner
             if len(t.intermediate_values) < json.loads(t.system_attrs["train"])["epochs"]]
    assert any(t.params["lr"] == WEAK_LR for t in early), [
        (t.number, t.state.name, t.params.get("lr"), len(t.intermediate_values)) for t in trials]
    for t in early:  # they trained (unlike rejections) and stopped early
        assert json.loads(t.system_attrs["train"])["epochs"] == EPOCHS
        assert {"arch_summary", "seconds_per_epoch"} <= t.user_attrs.keys()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert len(t.intermediate_values) == EPOCHS
            if t.params["lr"] == WEAK_LR:  # only while the pruner waits for its startup trials
                assert sum(u.state == TrialState.COMPLETE
                           for u in trials[:t.number]) < PRUNER_STARTUP, t.number
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]


# -- search trials / best / report ---------------------------------------------------------


def test_trials_lists_every_trial_as_the_store_holds_it(
        searched: Searched, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["trials", *searched.store_args()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["trial", "state", "epoch", "val_acc", "params"]
    shown = [check_row(line, searched.trials).number for line in lines[1:]]
    assert shown == [t.number for t in searched.trials]


def test_best_lists_the_complete_trials_by_value(searched: Searched,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["best", *searched.store_args(), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [check_row(line, searched.trials).number for line in lines[1:]]
    assert shown == [t.number for t in complete_best_first(searched.trials)[:2]]


def test_report_shows_the_stores_values_and_counts(
        searched: Searched, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["report", *searched.store_args(), "--out", str(tmp_path), "--top", "50"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert markdown in capsys.readouterr().out
    assert (tmp_path / "pareto.png").stat().st_size > 1000

    trials = searched.trials
    counts = dict((kind, int(n)) for n, kind in re.findall(
        r"(\d+) (complete|pruned|over budget|failed)", markdown.split("\n", 3)[2]))
    assert counts == {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED and not rejected(t) for t in trials),
        "over budget": sum(rejected(t) for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials)}
    assert counts["pruned"] and counts["over budget"]  # both kinds of PRUNED are told apart

    rows = table_rows(markdown)
    assert [int(r[1]) for r in rows] == [t.number for t in complete_best_first(trials)]
    for rank, (cells, t) in enumerate(zip(rows, complete_best_first(trials), strict=True), 1):
        attrs = t.user_attrs
        assert cells == [
            str(rank), str(t.number), f"{t.value:.2%}", "-", f"{attrs['n_params']:,}",
            f"{attrs['flops'] / 1e6:,.1f}", str(EPOCHS), f"{attrs['seconds_per_epoch']:.2f}",
            attrs.get("baseline", "-"), attrs["arch_summary"].replace("|", "\\|")]
    assert rows[0][2] != rows[-1][2]  # the trials' values differ, so the order means something


# -- the live view -------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def header_numbers(text: str) -> tuple[int, int, float, int]:
    """(finished, total, best value, best trial) from the live view's header."""
    found = re.search(r"(\d+)/(\d+) finished, 0 running, best (\d\.\d{4}) \(#(\d+)\)", text)
    assert found, text
    return int(found[1]), int(found[2]), float(found[3]), int(found[4])


def test_live_view_draws_the_stores_trials_on_a_terminal(
        searched: Searched, monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.load_study(study_name="smoke", storage=searched.url)
    screen = Terminal()
    monkeypatch.setenv("COLUMNS", "250")  # rich fits the table to the terminal's width
    view = LiveView(study, N_TRIALS, out=screen)
    view.update()
    view.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # what it shows
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Each redraw writes the whole table again: the screen shows the last one.
    lines = lines[max(i for i, line in enumerate(lines) if line.startswith("smoke: ")):]
    assert re.search(r"elapsed \S+, about \S+ left", lines[0]), lines[0]
    assert lines[1].split() == ["trial", "state", "epoch", "val_acc", "params",
                                "architecture", "/", "reason"]
    best = complete_best_first(searched.trials)[0]
    assert lines[0].startswith("smoke: ")
    assert header_numbers(lines[0]) == (len(searched.trials), N_TRIALS,
                                        round(best.value or 0.0, 4), best.number)
    shown = [check_row(line, searched.trials).number for line in lines[2:]]
    assert shown == [t.number for t in searched.trials][-12:]


def test_live_view_in_a_log_prints_each_finished_trial_once(searched: Searched) -> None:
    # What `search run` printed while it ran (not a terminal): a line per trial as it
    # finished, with the progress so far; and a fresh view of the finished store.
    study = optuna.load_study(study_name="smoke", storage=searched.url)
    log = io.StringIO()
    view = LiveView(study, N_TRIALS, out=log)
    view.update()
    view.update()  # nothing new: nothing printed
    for text in (searched.output, log.getvalue()):
        rows = [line for line in text.splitlines() if re.match(r"\s+\d+ [A-Z]+ ", line)]
        numbers = [check_row(line.split("   | ")[0], searched.trials).number for line in rows]
        assert sorted(numbers) == [t.number for t in searched.trials]
    best = complete_best_first(searched.trials)[0]
    headers = {header_numbers(line) for line in log.getvalue().splitlines()}
    assert headers == {(N_TRIALS, N_TRIALS, round(best.value or 0.0, 4), best.number)}
