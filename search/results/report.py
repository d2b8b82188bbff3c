"""`search report`: a study's accuracy-against-size plot and its leaderboard.

Reads only what the workers put in the store, through `search.record` (the
trial's value, its intermediate values and the user attributes ``n_params``,
``flops``, ``arch_summary``, ``seconds_per_epoch`` and ``baseline``), so it works
on a study that is still running and on trials made by hand or by older code
that lack some attributes. The plot is drawn by `search.results.pareto`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from search import record
from search.results.pareto import Point, pareto_front, plot_png, points
from trainers import rundir

MISSING = "-"


class ReportError(ValueError):
    """The study cannot be reported on yet (no complete trial)."""


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote."""

    pareto_png: Path  # the plot written
    table_md: Path  # the markdown file written
    markdown: str  # the same markdown text (the CLI prints it)
    n_complete: int  # complete trials plotted


def write_report(study: optuna.Study, out_dir: Path, *, budget: int | None = None,
                 top: int = 10) -> Report:
    """Write ``out_dir/pareto.png`` and ``out_dir/report.md`` for ``study``.

    Args:
        study: a study whose trials were made by the search workers.
        out_dir: folder for both files; created if missing.
        budget: the parameter budget, drawn as a vertical line when given.
        top: how many complete trials the table lists, best first.

    Returns:
        The paths written, the markdown text and the number of complete trials plotted.

    Raises:
        ReportError: the study has no complete trial.
        ValueError: ``top`` or ``budget`` is not a positive integer.
    """
    if top < 1:
        raise ValueError(f"top must be a positive integer, got {top=}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be a positive number of parameters, got {budget=}")
    trials = study.get_trials(deepcopy=False)
    counts = _count_outcomes(trials)
    ranked = record.best(trials)
    if not ranked:
        raise ReportError(f"study {study.study_name!r} has no complete trial yet "
                          f"({_counts_text(counts, skip_zero=True) or 'no trials'})")
    plotted = points(trials)
    front = pareto_front(plotted)
    title = f"{study.study_name}\n{_counts_text(counts, skip_zero=False)}"

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = rundir.write_bytes(out_dir / rundir.PARETO,
                             plot_png(title, plotted, front, ranked[0].number, budget))
    markdown = _markdown(study.study_name, counts, ranked[:top], front, budget=budget)
    md = rundir.write_bytes(out_dir / rundir.REPORT, markdown.encode())
    return Report(pareto_png=png, table_md=md, markdown=markdown,
                  n_complete=sum(p.complete for p in plotted))


def _count_outcomes(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by what happened to them, in `record.OUTCOMES` order."""
    counts = Counter(record.outcome(t) for t in trials)
    return {kind: counts[kind] for kind in record.OUTCOMES}


def _counts_text(counts: dict[str, int], *, skip_zero: bool) -> str:
    # The four outcomes always show; running/waiting only while there are some.
    return ", ".join(f"{n} {state}" for state, n in counts.items()
                     if n or (not skip_zero and state in record.OUTCOMES[:4]))


# --- markdown ---------------------------------------------------------------------------

TABLE_HEAD = ("| rank | trial | val acc | test acc (promoted) | parameters | MFLOPs | epochs "
              "| s/epoch | baseline | architecture |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")


def _markdown(name: str, counts: dict[str, int], ranked: list[FrozenTrial],
              front: list[Point], *, budget: int | None) -> str:
    lines = [f"# Search report: {_cell(name)}", "",
             f"Trials: {_counts_text(counts, skip_zero=False)}."]
    if budget is not None:
        lines.append(f"Budget: {budget:,} parameters.")
    lines += ["", f"![accuracy against parameters]({rundir.PARETO})", "",
              f"Top {len(ranked)} complete trials by {record.OBJECTIVE.label}:", "", TABLE_HEAD]
    lines += [_row(rank, t) for rank, t in enumerate(ranked, start=1)]
    numbers = ", ".join(str(p.number) for p in front) or MISSING
    lines += ["", f"Pareto front: trials {numbers}" if front else f"Pareto front: {numbers}"]
    return "\n".join(lines) + "\n"


def _row(rank: int, trial: FrozenTrial) -> str:
    params = record.int_attr(trial, record.N_PARAMS)
    flops = record.int_attr(trial, record.FLOPS)
    spe = record.float_attr(trial, record.SECONDS_PER_EPOCH)
    value = record.value(trial)
    test = record.float_attr(trial, record.PROMOTED_TEST_ACC)  # written by `search promote`
    cells = [
        str(rank), str(trial.number),
        MISSING if value is None else f"{value:.2%}",
        MISSING if test is None else f"{test:.2%}",
        MISSING if params is None else f"{params:,}",
        MISSING if flops is None else f"{flops / 1e6:,.1f}",
        str(len(trial.intermediate_values)) if trial.intermediate_values else MISSING,
        MISSING if spe is None else f"{spe:.2f}",
        _cell(record.str_attr(trial, record.BASELINE)),
        _cell(record.str_attr(trial, record.ARCH_SUMMARY)),
    ]
    return "| " + " | ".join(cells) + " |"


def _cell(text: str | None) -> str:
    # Architecture summaries contain "|" (between stem, stages and head), which would
    # otherwise split the table cell.
    if not text:
        return MISSING
    return " ".join(text.split()).replace("|", "\\|")
