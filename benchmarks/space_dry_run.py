"""Dry-run benchmark of a study's sampler: proposals per second and rejection rate.

Compares, over the same number of proposals of the same study:
  study   the study file's sampler (for resnet-budget: TPE with budget-aware redraws)
  plain   the same sampler without budget awareness (rejections become pruned trials)
  random  pure random sampling, no budget awareness

Accepted proposals are scored by parameter count / budget (see space/dryrun.py).
Prints a table and writes benchmarks/results/space-dry-run-<study>-<date>.json.

    python benchmarks/space_dry_run.py [--study resnet-budget] [--n 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import optuna
from record import save

from models import BASELINES, build_model, count_params
from space import load_spec
from space.dryrun import SAMPLERS, dry_run


def counting_speed(repeats: int = 200) -> dict[str, float]:
    """Microseconds per call: count_params against building on the meta device."""
    archs = list(BASELINES.values())
    start = time.perf_counter()
    for _ in range(repeats):
        for arch in archs:
            count_params(arch)
    analytic = (time.perf_counter() - start) / (repeats * len(archs))
    start = time.perf_counter()
    for arch in archs:
        sum(p.numel() for p in build_model(arch, device="meta").parameters())
    meta = (time.perf_counter() - start) / len(archs)
    return {"count_params_us": round(analytic * 1e6, 1),
            "meta_build_count_us": round(meta * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="resnet-budget")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args()
    spec = load_spec(args.study)

    rows = []
    for sampler in args.samplers.split(","):
        result = dry_run(spec, args.n, seed=args.seed, sampler=sampler)
        rows.append({"variant": sampler, **result.to_dict()})
        print(f"{sampler}: {result.proposals} proposals in {result.seconds:.1f} s",
              file=sys.stderr)

    print(f"{'sampler':<8} {'proposals/s':>11} {'rejected':>9} {'draws/proposal':>15} "
          f"{'accepted n_params: p10 / median / p90':>40}")
    for row in rows:
        q = row["n_params"]
        draws = row["inner_draws"] / row["proposals"] if row["inner_draws"] else 1.0
        print(f"{row['variant']:<8} {row['proposals_per_s']:>11.1f} "
              f"{100 * row['rejection_rate']:>8.1f}% {draws:>15.2f} "
              f"{q['p10']:>14,} / {q['median']:>9,} / {q['p90']:>9,}")

    speed = counting_speed()
    print(f"count_params: {speed['count_params_us']} us per call over the baselines "
          f"(building on the meta device and summing: {speed['meta_build_count_us']} us)")

    save("space_dry_run", f"space-dry-run-{args.study}", {
        "study": args.study,
        "proposals_per_sampler": args.n,
        "seed": args.seed,
        "results": rows,
        "counting": speed,
    }, optuna=optuna.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
