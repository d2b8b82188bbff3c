"""search.results.report: the Pareto plot and the leaderboard of a study in a real SQLite store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from models import BASELINES, ArchConfig, count_flops, count_params
from models.baselines import three_stage
from search.results.report import Report, ReportError, write_report
from trainers import TrainConfig

BUDGET = 5_000_000


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(study_name="report-test", storage=f"sqlite:///{tmp_path}/s.db",
                               direction="maximize")


def worker_attrs(arch: ArchConfig) -> dict[str, Any]:
    """The user attributes a worker sets on a trial that samples ``arch``."""
    attrs: dict[str, Any] = {"n_params": count_params(arch)}
    if count_params(arch) > BUDGET:
        attrs["rejected_reason"] = f"{count_params(arch):,} parameters > budget {BUDGET:,}"
        return attrs
    attrs |= {"flops": count_flops(arch), "arch": arch.to_json(),
              "arch_summary": arch.describe(), "train": TrainConfig().to_json(),
              "device": "cpu", "seconds_per_epoch": 1.5, "images_per_s": 30000.0}
    return attrs


def add(study: optuna.Study, arch: str | ArchConfig | None, state: TrialState,
        value: float | None = None, *, epochs: int = 0, baseline: bool = False,
        **extra: Any) -> int:
    """Add a finished trial as a worker would leave it; its number."""
    config = BASELINES[arch] if isinstance(arch, str) else arch
    attrs = worker_attrs(config) if config is not None else {}
    if baseline:
        assert isinstance(arch, str)
        attrs["baseline"] = arch
    attrs |= extra
    # A pruned trial's last epoch is not its best, as happens when the pruner stops it.
    curve = {e: (value or 0.5) * (e / epochs if state == TrialState.COMPLETE else
                                  (1.0 if e == 1 else 0.9)) for e in range(1, epochs + 1)}
    study.add_trial(optuna.trial.create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        user_attrs=attrs, intermediate_values=curve))
    return study.trials[-1].number


def complete(study: optuna.Study, arch: str | ArchConfig | None, value: float,
             **kw: Any) -> int:
    return add(study, arch, TrialState.COMPLETE, value, epochs=kw.pop("epochs", 4), **kw)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of the table's body rows (an escaped "\\|" stays inside its cell)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---")) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def pareto_line(markdown: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("Pareto front:"))


def test_report_writes_a_png_that_opens_and_a_markdown_file_equal_to_the_text(
        study: optuna.Study, tmp_path: Path) -> None:
    for name, acc in [("resnet-8-half", 0.6), ("resnet-20", 0.8), ("resnet-56", 0.85)]:
        complete(study, name, acc)
    out = tmp_path / "new" / "folder"

    report = write_report(study, out, budget=BUDGET)

    assert isinstance(report, Report)
    assert report.pareto_png == out / "pareto.png"
    with Image.open(report.pareto_png) as img:
        assert img.format == "PNG"
        width, height = img.size
        img.load()  # a truncated file fails here
    assert 600 <= width <= 2000 and 400 <= height <= 1500
    assert report.table_md.read_text() == report.markdown
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "report.md"]  # no temp left
    assert report.n_complete == 3


def test_table_lists_the_top_complete_trials_best_first(study: optuna.Study,
                                                         tmp_path: Path) -> None:
    values = [0.61, 0.93, 0.72, 0.88, 0.55, 0.97, 0.81, 0.66, 0.90, 0.70, 0.84, 0.59]
    numbers = [complete(study, "resnet-20", v) for v in values]
    add(study, "resnet-56", TrialState.PRUNED, 0.99, epochs=2)  # better, but not complete
    expected = [n for _, n in sorted(zip(values, numbers, strict=True), reverse=True)]

    rows = table_rows(write_report(study, tmp_path, top=5).markdown)
    assert [int(r[1]) for r in rows] == expected[:5]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][2] == "97.00%"

    rows = table_rows(write_report(study, tmp_path, top=50).markdown)
    assert [int(r[1]) for r in rows] == expected


def test_table_row_shows_the_trials_numbers_in_readable_units(study: optuna.Study,
                                                               tmp_path: Path) -> None:
    arch = BASELINES["resnet-20"]
    number = complete(study, "resnet-20", 0.8123, epochs=7, baseline=True,
                      promoted_test_acc=0.7955)

    (row,) = table_rows(write_report(study, tmp_path).markdown)
    assert row == ["1", str(number), "81.23%", "79.55%", "272,474",
                   f"{count_flops(arch) / 1e6:,.1f}", "7", "1.50", "resnet-20",
                   arch.describe().replace("|", "\\|")]


def test_pareto_front_lists_the_trials_no_smaller_trial_matches_in_order_of_size(
        study: optuna.Study, tmp_path: Path) -> None:
    # Sizes: 8-half 20k < 20 272k < 56 856k < 110 1.73M < wrn 2.75M < 443 4.70M.
    n443 = complete(study, "resnet-443", 0.90)
    complete(study, "wrn-16-4", 0.84)  # beaten by the smaller resnet-110
    n20 = complete(study, "resnet-20", 0.80)
    complete(study, "resnet-56", 0.80)  # only ties the smaller resnet-20
    n110 = complete(study, "resnet-110", 0.85)
    n8 = complete(study, "resnet-8-half", 0.70)
    complete(study, "resnet-20", 0.75)  # same size as a better trial
    add(study, "resnet-8-half", TrialState.PRUNED, 0.95, epochs=2)  # pruned: not on the front
    complete(study, None, 0.99)  # no size recorded: cannot be placed

    report = write_report(study, tmp_path, budget=BUDGET)
    assert pareto_line(report.markdown) == f"Pareto front: trials {n8}, {n20}, {n110}, {n443}"
    assert report.n_complete == 7


def test_baselines_and_unfinished_trials_are_counted_and_do_not_break_the_report(
        study: optuna.Study, tmp_path: Path) -> None:
    b20 = complete(study, "resnet-20", 0.82, baseline=True)
    add(study, "resnet-56", TrialState.PRUNED, 0.7, epochs=3, baseline=True)
    complete(study, "resnet-110", 0.88)
    add(study, "resnet-8-half", TrialState.PRUNED, 0.5, epochs=1)
    add(study, "resnet-8-half", TrialState.PRUNED)  # pruned before its first epoch
    wide = three_stage((4, 4, 3), (64, 128, 320), stem_width=64)
    assert count_params(wide) > BUDGET
    add(study, wide, TrialState.PRUNED)  # over budget
    add(study, "resnet-443", TrialState.FAIL, epochs=2, fail_reason="TrainingDiverged: nan")
    add(study, None, TrialState.FAIL)  # a worker died: no attributes at all

    report = write_report(study, tmp_path, budget=BUDGET)

    assert "Trials: 2 complete, 3 pruned, 1 over budget, 2 failed." in report.markdown
    rows = table_rows(report.markdown)
    assert [r[8] for r in rows] == ["-", "resnet-20"]
    assert int(rows[1][1]) == b20
    assert report.n_complete == 2
    with Image.open(report.pareto_png) as img:
        img.load()


def test_missing_user_attrs_render_as_a_dash(study: optuna.Study, tmp_path: Path) -> None:
    complete(study, "resnet-20", 0.7)
    bare = complete(study, None, 0.9, epochs=0)
    odd = complete(study, None, 0.8, epochs=0, n_params="many", flops=None,
                   seconds_per_epoch=float("nan"), arch_summary="")

    report = write_report(study, tmp_path)

    rows = table_rows(report.markdown)
    assert [int(r[1]) for r in rows[:2]] == [bare, odd]
    for row in rows[:2]:
        assert row[2] != "-"
        assert row[3:] == ["-"] * 7
    assert report.n_complete == 1  # only the trial with a size is plotted


def test_a_study_without_a_complete_trial_raises_naming_the_states(study: optuna.Study,
                                                                     tmp_path: Path) -> None:
    for _ in range(3):
        add(study, "resnet-20", TrialState.PRUNED, 0.6, epochs=2)
    add(study, "resnet-443", TrialState.FAIL, fail_reason="DataError: x")
    out = tmp_path / "out"

    with pytest.raises(ReportError, match=r"'report-test' has no complete trial yet "
                                          r"\(3 pruned, 1 failed\)"):
        write_report(study, out)
    assert not out.exists()


def test_an_empty_study_raises_report_error(study: optuna.Study, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no complete trial yet \(no trials\)"):
        write_report(study, tmp_path)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"top": 0}, "top must be a positive integer"),
    ({"budget": 0}, "budget must be a positive"),
])
def test_bad_arguments_are_refused(study: optuna.Study, tmp_path: Path,
                                   kwargs: dict[str, int], message: str) -> None:
    complete(study, "resnet-20", 0.8)
    with pytest.raises(ValueError, match=message):
        write_report(study, tmp_path, **kwargs)


def test_a_second_report_replaces_the_first(study: optuna.Study, tmp_path: Path) -> None:
    complete(study, "resnet-20", 0.8)
    first = write_report(study, tmp_path)
    complete(study, "resnet-56", 0.9)
    second = write_report(study, tmp_path)

    assert first.table_md == second.table_md
    assert second.table_md.read_text() == second.markdown != first.markdown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "report.md", "s.db"]
