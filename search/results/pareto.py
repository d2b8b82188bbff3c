"""The accuracy-against-size plot of a study: its trials, the Pareto front, the budget.

Complete trials are plotted at their final value, pruned trials that trained at
their best epoch, baselines named; the front is of complete trials only. Values
and attributes are read through `search.record`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial

from search import record

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox


@dataclass(frozen=True)
class Point:
    """One trial on the plot: its size and its (final or best-epoch) accuracy."""

    number: int
    params: int
    acc: float  # fraction in [0, 1]
    complete: bool  # False: pruned, plotted at its best epoch
    baseline: str | None


def points(trials: Iterable[FrozenTrial]) -> list[Point]:
    """Complete trials and pruned trials that trained, if they record their size."""
    found = []
    for t in trials:
        kind = record.outcome(t)
        if kind == "complete":
            acc = record.value(t)
        elif kind == "pruned":
            acc = record.best_epoch_value(t)
        else:
            continue
        params = record.int_attr(t, record.N_PARAMS)
        if params is None or params <= 0 or acc is None:
            continue
        found.append(Point(t.number, params, acc, kind == "complete",
                           record.str_attr(t, record.BASELINE)))
    return found


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Complete points that no complete point with at most as many parameters matches.

    Sorted by parameters; a tie in size keeps the more accurate (then the older) trial.
    """
    ordered = sorted((p for p in points if p.complete),
                     key=lambda p: (p.params, -p.acc, p.number))
    front: list[Point] = []
    for p in ordered:
        if not front or p.acc > front[-1].acc:
            front.append(p)
    return front


# --- plot -------------------------------------------------------------------------------

def plot_png(title: str, points: list[Point], front: list[Point], best: int,
             budget: int | None) -> bytes:
    """The plot as PNG bytes.

    Args:
        title: above the plot (the study's name and its trials' outcomes).
        points: what `points` found; front: what `pareto_front` made of them.
        best: number of the best trial, starred if it is among ``points``.
        budget: the parameter budget, drawn as a vertical line when given.
    """
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
    ax.set_ylabel(f"{record.OBJECTIVE.label} (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize=11)
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


def _y_limits(points: list[Point]) -> tuple[float, float] | None:
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


def _draw_points(ax: Axes, points: list[Point], floor: float | None) -> list[Annotation]:
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


def _draw_front(ax: Axes, front: list[Point], points: list[Point]) -> None:
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


def _draw_best(ax: Axes, best: int, points: list[Point]) -> None:
    point = next((p for p in points if p.number == best), None)
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
