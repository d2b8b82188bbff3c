"""Does pruning pay? A real search on the CPU, with the pruner and without, same wall time.

The study is the built-in smoke space (tiny networks, 3,000 training images, 1,000
for validation) with longer trials (``--epochs``, 6 by default) so that a pruner has
epochs to judge; one version prunes with Hyperband (min_resource 1, reduction factor
3, as resnet-budget), the other never prunes. For each seed, both run for ``--minutes``
of wall time each (no new trial starts after it), one after the other, in their own
SQLite store, with real training (`trainers.fit`). Reported per run: the best
validation accuracy reached, trials finished (complete and pruned) and the epochs
trained; then the medians over seeds.

    python benchmarks/pruning.py [--data ARCHIVE] [--seeds 3] [--minutes 5] [--epochs 6]

Takes seeds x 2 x minutes (30 minutes by default) on 2 cores; not part of CI. Writes
benchmarks/results/pruning-cpu-<date>.json after every run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
from record import save

from search import record
from search.run import RunOptions, run_search
from trainers.locate import find_data

PRUNERS = {"hyperband": 'type = "hyperband"\nmin_resource = 1\nreduction_factor = 3',
           "none": 'type = "none"'}


def study_file(folder: Path, pruner: str, epochs: int) -> Path:
    text = resources.files("space").joinpath("studies").joinpath("smoke.toml").read_text()
    head, _, _ = text.partition("[pruner]")
    head = head.replace("epochs = [1, 2]", f"epochs = {epochs}", 1)
    path = folder / f"pruning-{pruner}.toml"
    path.write_text(f"{head}[pruner]\n{PRUNERS[pruner]}\n")
    return path


def one_run(folder: Path, pruner: str, seed: int, minutes: float, epochs: int,
            data: str) -> dict[str, Any]:
    study = study_file(folder, pruner, epochs)
    url = f"sqlite:///{folder / f'{pruner}-{seed}.db'}"
    start = time.perf_counter()
    code = run_search(RunOptions(study=str(study), storage=url, study_name=f"{pruner}-{seed}",
                                 n_trials=10_000, timeout=minutes * 60, workers=1,
                                 executor="local", data=data, seed=seed, device="cpu",
                                 baselines=False), io.StringIO())
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=f"{pruner}-{seed}", storage=url).trials
    best = record.best(trials, 1)
    states = [record.outcome(t) for t in trials]
    return {"pruner": pruner, "seed": seed, "exit_code": code, "wall_seconds": round(wall, 1),
            "best_val_acc": record.value(best[0]) if best else None,
            "complete": states.count("complete"),
            "pruned": sum(1 for t in trials if t.state == optuna.trial.TrialState.PRUNED
                          and not record.over_budget(t)),
            "rejected": sum(1 for t in trials if record.over_budget(t)),
            "epochs_trained": sum(len(t.intermediate_values) for t in trials)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    if not 1 <= args.seeds <= 20 or not 0.5 <= args.minutes <= 120 or not 2 <= args.epochs <= 50:
        parser.error("--seeds in 1..20, --minutes in 0.5..120, --epochs in 2..50")
    data = find_data(args.data)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for pruner in PRUNERS:
                row = one_run(Path(tmp), pruner, seed, args.minutes, args.epochs, data)
                rows.append(row)
                print(f"seed {seed}  pruner {pruner:<9}  best val_acc "
                      f"{row['best_val_acc'] or 0:.4f}  complete {row['complete']:>3}  "
                      f"pruned {row['pruned']:>3}  epochs {row['epochs_trained']:>4}  "
                      f"{row['wall_seconds']:.0f} s", flush=True)
                summary = {p: {key: statistics.median(r[key] or 0 for r in rows
                                                      if r["pruner"] == p)
                               for key in ("best_val_acc", "complete", "pruned",
                                           "epochs_trained", "wall_seconds")}
                           for p in PRUNERS if any(r["pruner"] == p for r in rows)}
                save("pruning", "pruning-cpu", {
                    "study": "smoke space, 3,000 training and 1,000 validation images, "
                    f"{args.epochs} epochs per trial", "minutes_per_run": args.minutes,
                    "seeds": args.seeds, "rows": rows, "medians": summary},
                    optuna=optuna.__version__)
    for pruner, medians in summary.items():
        print(f"median over {args.seeds} seeds, {pruner:<9}: best val_acc "
              f"{medians['best_val_acc']:.4f}, {medians['complete']:.0f} complete, "
              f"{medians['pruned']:.0f} pruned, {medians['epochs_trained']:.0f} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
