"""What the budget-aware sampler proposes, block type by block type.

Runs ``search space --study NAME --sample N``'s dry run (the study file's own
sampler, each accepted proposal scored by its size against the budget) and
reports proposals/s, the rejected share, the spread of accepted parameter counts
and how often each block type (and branch regulariser) is proposed and accepted.
Issue 14 compares this before and after the new block types entered resnet-budget.

    python benchmarks/space_blocks.py [--study resnet-budget] [--n 1000] [--seed 0] [--tag after]

Writes benchmarks/results/space-blocks-<study>-<tag>-<date>.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import optuna
from record import save

from space import load_spec
from space.dryrun import dry_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="resnet-budget")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="now", help="label of this code state (before/after)")
    args = parser.parse_args()
    spec = load_spec(args.study)
    proposed: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    original = spec.sample

    def sample(trial: optuna.Trial) -> object:
        try:
            candidate = original(trial)
        finally:
            kind = str(trial.params.get("block_type", spec.arch["block_type"].values()[0]))
            drop = trial.params.get("drop_mode")
            proposed[kind] += 1
            if drop is not None:
                proposed[f"drop_mode={drop}"] += 1
        accepted[kind] += 1
        if drop is not None:
            accepted[f"drop_mode={drop}"] += 1
        return candidate

    object.__setattr__(spec, "sample", sample)
    result = dry_run(spec, args.n, seed=args.seed)
    row = result.to_dict()
    q = row["n_params"]
    print(f"{args.study} ({args.tag}): {result.proposals} proposals in {result.seconds:.1f} s, "
          f"{result.proposals_per_s:.1f}/s; rejected {100 * result.rejection_rate:.1f}%; "
          f"accepted n_params p10 {q['p10']:,} / median {q['median']:,} / p90 {q['p90']:,} "
          f"(min {q['min']:,}, max {q['max']:,})")
    print(f"{'block type':<28} {'proposed':>9} {'accepted':>9}")
    for kind, n in sorted(proposed.items(), key=lambda kv: -kv[1]):
        print(f"{kind:<28} {n:>9} {accepted[kind]:>9}")
    save("space_blocks", f"space-blocks-{args.study}-{args.tag}", {
        "study": args.study, "tag": args.tag, "seed": args.seed, "result": row,
        "proposed": dict(proposed), "accepted": dict(accepted),
    }, optuna=optuna.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
