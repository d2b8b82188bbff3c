"""`search report`: a study's accuracy-against-size plot and its leaderboard.

Reads only what the workers put in the store (the trial's value, its intermediate
values and the user attributes ``n_params``, ``flops``, ``arch_summary``,
``seconds_per_epoch`` and ``baseline``), so it works on a study that is still
running and on trials made by hand or by older code that lack some attributes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

PNG_NAME = "pareto.png"
MD_NAME = "report.md"
MISSING = "-"
STATE_ORDER = ("complete", "pruned", "over budget", "failed", "running", "waiting")


class ReportError(ValueError):
    """The study cannot be reported on yet (no complete trial)."""


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote."""

    pareto_png: Path  # the plot written
    table_md: Path  # the markdown file written
    markdown: str  # the same markdown text (the CLI prints it)
    n_complete: int  # complete trials plotted


@dataclass(frozen=True)
class _Point:
    """One trial on the plot: its size and its (final or best-epoch) accuracy."""

    number: int
    params: int
    acc: float  # fraction in [0, 1]
    complete: bool  # False: pruned, plotted at its best epoch
    baseline: str | None


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
    counts = _count_states(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _value(t) is not None]
    if not complete:
        raise ReportError(f"study {study.study_name!r} has no complete trial yet "
                          f"({_counts_text(counts, skip_zero=True) or 'no trials'})")
    points = _points(trials)
    front = _pareto_front(points)
    best = max(complete, key=lambda t: (_value(t) or 0.0, -t.number))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / PNG_NAME
    _atomic_write(png, _plot_png(study.study_name, counts, points, front, best, budget))
    markdown = _markdown(study.study_name, counts, complete, front, top=top, budget=budget)
    md = out_dir / MD_NAME
    _atomic_write(md, markdown.encode())
    return Report(pareto_png=png, table_md=md, markdown=markdown,
                  n_complete=sum(p.complete for p in points))


def _count_states(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by what happened to them, in `STATE_ORDER`.

    Over-budget trials are PRUNED in the store (before any training) but are told
    apart by their ``rejected_reason`` attribute, since the two say different things
    about the search: one about the space, the other about the pruner.
    """
    counts = dict.fromkeys(STATE_ORDER, 0)
    for t in trials:
        if t.state == TrialState.PRUNED:
            key = "over budget" if "rejected_reason" in t.user_attrs else "pruned"
        elif t.state == TrialState.FAIL:
            key = "failed"
        else:
            key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def _counts_text(counts: dict[str, int], *, skip_zero: bool) -> str:
    # The four outcomes always show; running/waiting only while there are some.
    return ", ".join(f"{n} {state}" for state, n in counts.items()
                     if n or (not skip_zero and state in STATE_ORDER[:4]))


def _pareto_front(points: Sequence[_Point]) -> list[_Point]:
    """Complete points that no complete point with at most as many parameters matches.

    Sorted by parameters; a tie in size keeps the more accurate (then the older) trial.
    """
    ordered = sorted((p for p in points if p.complete),
                     key=lambda p: (p.params, -p.acc, p.number))
    front: list[_Point] = []
    for p in ordered:
        if not front or p.acc > front[-1].acc:
            front.append(p)
    return front


def _value(trial: FrozenTrial) -> float | None:
    value = trial.value
    return value if value is not None and math.isfinite(value) else None


def _int_attr(attrs: dict[str, Any], key: str) -> int | None:
    # Hand-made or older trials may hold anything here; bool is an int to Python.
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def _float_attr(attrs: dict[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _str_attr(attrs: dict[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    return value if isinstance(value, str) and value else None


def _best_epoch(trial: FrozenTrial) -> float | None:
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    return max(values) if values else None


def _points(trials: Iterable[FrozenTrial]) -> list[_Point]:
    """Complete trials and pruned trials that trained, if they record their size."""
    points = []
    for t in trials:
        params = _int_attr(t.user_attrs, "n_params")
        if t.state == TrialState.COMPLETE:
            acc = _value(t)
        elif t.state == TrialState.PRUNED and "rejected_reason" not in t.user_attrs:
            acc = _best_epoch(t)
        else:
            continue
        if params is None or params <= 0 or acc is None:
            continue
        points.append(_Point(t.number, params, acc, t.state == TrialState.COMPLETE,
                             _str_attr(t.user_attrs, "baseline")))
    return points


# --- markdown ---------------------------------------------------------------------------

TABLE_HEAD = ("| rank | trial | val acc | test acc (promoted) | parameters | MFLOPs | epochs "
              "| s/epoch | baseline | architecture |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")


def _markdown(name: str, counts: dict[str, int], complete: list[FrozenTrial],
              front: list[_Point], *, top: int, budget: int | None) -> str:
    ranked = sorted(complete, key=lambda t: (-(_value(t) or 0.0), t.number))[:top]
    lines = [f"# Search report: {_cell(name)}", "",
             f"Trials: {_counts_text(counts, skip_zero=False)}."]
    if budget is not None:
        lines.append(f"Budget: {budget:,} parameters.")
    lines += ["", f"![accuracy against parameters]({PNG_NAME})", "",
              f"Top {len(ranked)} complete trials by validation accuracy:", "", TABLE_HEAD]
    lines += [_row(rank, t) for rank, t in enumerate(ranked, start=1)]
    numbers = ", ".join(str(p.number) for p in front) or MISSING
    lines += ["", f"Pareto front: trials {numbers}" if front else f"Pareto front: {numbers}"]
    return "\n".join(lines) + "\n"


def _row(rank: int, trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    params = _int_attr(attrs, "n_params")
    flops = _int_attr(attrs, "flops")
    spe = _float_attr(attrs, "seconds_per_epoch")
    value = _value(trial)
    test = _float_attr(attrs, "promoted_test_acc")  # written by `search promote`
    cells = [
        str(rank), str(trial.number),
        MISSING if value is None else f"{value:.2%}",
        MISSING if test is None else f"{test:.2%}",
        MISSING if params is None else f"{params:,}",
        MISSING if flops is None else f"{flops / 1e6:,.1f}",
        str(len(trial.intermediate_values)) if trial.intermediate_values else MISSING,
        MISSING if spe is None else f"{spe:.2f}",
        _cell(_str_attr(attrs, "baseline")),
        _cell(_str_attr(attrs, "arch_summary")),
    ]
    return "| " + " | ".join(cells) + " |"


def _cell(text: str | None) -> str:
    # Architecture summaries contain "|" (between stem, stages and head), which would
    # otherwise split the table cell.
    if not text:
        return MISSING
    return " ".join(text.split()).replace("|", "\\|")


# --- plot -------------------------------------------------------------------------------

def _plot_png(name: str, counts: dict[str, int], points: list[_Point], front: list[_Point],
              best: FrozenTrial, budget: int | None) -> bytes:
    """The accuracy-against-size plot as PNG bytes."""
    # Figure + Agg canvas, never pyplot: no GUI backend, no global figure registry
    # to leak into, safe to call from a server thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    limits = _y_limits(points)
    labels = _draw_points(ax, points, None if limits is None else limits[0])
    _draw_front(ax, front, points)
    _draw_best(ax, best, points)
    if budget is not None:
        ax.axvline(budget / 1e6, color="0.3", linestyle="--", linewidth=1,
                   label=f"budget {budget / 1e6:g}M")
    _set_x_axis(ax, [p.params for p in points] + ([budget] if budget else []))
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{name}\n{_counts_text(counts, skip_zero=False)}", fontsize=11)
    if limits is not None:
        ax.set_ylim(*limits)
    if points:
        ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
        _spread_labels(fig, labels)
    else:
        ax.text(0.5, 0.5, "no complete trial records its parameter count",
                transform=ax.transAxes, ha="center", va="center", color="0.4")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _y_limits(points: list[_Point]) -> tuple[float, float] | None:
    """Accuracy axis limits (%): from a margin below the worst complete trial to a
    margin above the best point, which leaves room for the best trial's label.

    Trials pruned after an epoch or two sit far below the rest; letting them set the
    axis would squash the complete trials, which are what the plot is for.
    """
    done = [100 * p.acc for p in points if p.complete]
    if not done:
        return None
    low = min(done) - max(2.0, 0.15 * (max(done) - min(done)))
    high = max(100 * p.acc for p in points)
    return low, high + 0.1 * (high - low)


def _draw_points(ax: Axes, points: list[_Point], floor: float | None) -> list[Annotation]:
    """Scatter the trials; the baselines' name labels, for `_spread_labels`."""
    pruned = [p for p in points if not p.complete and p.baseline is None]
    plain = [p for p in points if p.complete and p.baseline is None]
    base = [p for p in points if p.baseline is not None]
    if pruned:
        hidden = sum(floor is not None and 100 * p.acc < floor for p in pruned)
        ax.scatter([p.params / 1e6 for p in pruned], [100 * p.acc for p in pruned],
                   marker="x", s=22, color="0.55", alpha=0.45, linewidths=1,
                   label="pruned (best epoch)" + (f"; {hidden} below the axis" if hidden else ""))
    if plain:
        ax.scatter([p.params / 1e6 for p in plain], [100 * p.acc for p in plain],
                   marker="o", s=26, color="tab:blue", alpha=0.8, label="complete")
    if not base:
        return []
    # Hollow when the baseline was pruned, so its accuracy reads as unfinished.
    ax.scatter([p.params / 1e6 for p in base], [100 * p.acc for p in base],
               marker="D", s=46, edgecolors="tab:red", linewidths=1.4, zorder=4,
               facecolors=["tab:red" if p.complete else "none" for p in base],
               label="baseline")
    return [ax.annotate(str(p.baseline) + ("" if p.complete else " (pruned)"),
                        (p.params / 1e6, 100 * p.acc), xytext=(6, -11),
                        textcoords="offset points", fontsize=8, color="tab:red")
            for p in sorted(base, key=lambda p: (p.params, -p.acc))]


def _spread_labels(fig: Figure, labels: list[Annotation], tries: int = 4) -> None:
    """Move each label down until it overlaps no earlier one (or ``tries`` runs out).

    Registry baselines come in near twins (resnet-110 and resnet-164 differ by 2% in
    size), whose names would otherwise print on top of each other.
    """
    if not labels:
        return
    fig.draw_without_rendering()  # settles the layout, so the extents are final
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    for label in labels:
        for _ in range(tries):
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = label.xyann
            label.xyann = (x, y - 10)  # points: one 8-point line and a little gap
        placed.append(label.get_window_extent(renderer))


def _draw_front(ax: Axes, front: list[_Point], points: list[_Point]) -> None:
    if not front:
        return
    xs = [p.params / 1e6 for p in front]
    ys = [100 * p.acc for p in front]
    # Carry the best accuracy on to the largest complete trial: the front is a
    # "best so far for this many parameters" curve, defined beyond its last corner.
    widest = max(p.params for p in points if p.complete) / 1e6
    if widest > xs[-1]:
        xs, ys = [*xs, widest], [*ys, ys[-1]]
    ax.step(xs, ys, where="post", color="tab:green", linewidth=1.6, zorder=3,
            label="Pareto front (complete)")


def _draw_best(ax: Axes, best: FrozenTrial, points: list[_Point]) -> None:
    point = next((p for p in points if p.number == best.number), None)
    if point is None:  # the best trial lacks a parameter count: nowhere to point
        return
    ax.scatter([point.params / 1e6], [100 * point.acc], marker="*", s=190,
               color="gold", edgecolors="black", linewidths=0.8, zorder=5)
    # To the left: the best trial is usually the largest, next to the budget line.
    ax.annotate(f"best: trial {point.number}, {point.acc:.2%}",
                (point.params / 1e6, 100 * point.acc), xytext=(-14, 6),
                textcoords="offset points", ha="right", va="bottom", fontsize=9,
                fontweight="bold",
                arrowprops={"arrowstyle": "-", "color": "0.3", "linewidth": 0.8})


def _set_x_axis(ax: Axes, params: list[int]) -> None:
    """Linear in millions, or logarithmic when the sizes span more than a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    sizes = [n for n in params if n > 0]
    if not sizes or max(sizes) <= 10 * min(sizes):
        ax.set_xlabel("parameters (millions)")
        return
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # Label the 2s and 5s between the decades only where few decades show, or the
    # axis reads as a wall of numbers.
    decades = math.log10(max(sizes) / min(sizes))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(_minor_label) if decades <= 3 else NullFormatter())


def _minor_label(value: float, _pos: int | None) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 5) else ""


# --- files ------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` complete or not at all (`atomic_writer`)."""
    from trainers.safeio import atomic_writer  # the CLI has loaded torch already (the spec)

    with atomic_writer(path) as file:
        file.write(data)
