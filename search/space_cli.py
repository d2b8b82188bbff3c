"""The ``search space``, ``baselines`` and ``data`` commands: study files, the named
architectures and the data set, without a store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from search.args import UsageError, int_at_least

if TYPE_CHECKING:
    from models import ArchConfig
    from space import StudySpec


def add_space_commands(sub: argparse._SubParsersAction) -> None:
    """space, baselines, data."""
    space = sub.add_parser(
        "space", help="show a study's search space; --sample N dry-runs its sampler",
        description="Show a study's search space. With --sample N, propose N candidates "
        "(no training) and report proposals per second, the rejection rate and the spread "
        "of accepted parameter counts.",
    )
    space.add_argument("--study", default="resnet-budget",
                       help="built-in study name or path to a study file (default: %(default)s)")
    space.add_argument("--sample", type=int_at_least(1), metavar="N",
                       help="dry run: propose N candidates")
    space.add_argument("--seed", type=int_at_least(0), default=0, help="sampler seed (default: 0)")
    space.add_argument("--sampler", choices=("study", "plain", "random"), default="study",
                       help="'study': the study file's sampler; 'plain': the same without "
                       "budget-aware redraws; 'random': pure random sampling with no budget "
                       "awareness (default: study)")
    space.add_argument("--json", action="store_true", help="print the dry run as JSON")
    space.set_defaults(func=cmd_space)

    baselines = sub.add_parser(
        "baselines", help="list the named reference architectures",
        description="List the named baselines with parameters, FLOPs and whether the "
        "study's space contains them.",
    )
    baselines.add_argument("--study", default="resnet-budget",
                           help="study whose budget and space to compare with")
    baselines.set_defaults(func=cmd_baselines)

    data = sub.add_parser(
        "data", help="load (and cache) a CIFAR-10 data set and summarise it",
        description="Read CIFAR-10 from the python batches (folder or cifar-10-python.tar.gz) "
        "or an image-folder tree (folder or tar), decode it once into the cache, and print "
        "its splits and classes. --download fetches the original archive first (needs "
        "internet access).",
    )
    data.add_argument("--data", metavar="PATH", help="the data set (required unless --download)")
    data.add_argument("--download", metavar="DIR",
                      help="download cifar-10-python.tar.gz into DIR and use it")
    data.set_defaults(func=cmd_data)


def cmd_space(args: argparse.Namespace, out: TextIO) -> int:
    from space import load_spec
    from space.dryrun import dry_run

    spec = load_spec(args.study)
    if args.sample is None:
        print_space(spec, out)
        return 0
    progress = _Progress(f"sampling {spec.name}") if sys.stderr.isatty() else None
    result = dry_run(spec, args.sample, seed=args.seed, sampler=args.sampler, progress=progress)
    if progress is not None:
        progress.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2), file=out)
        return 0
    q = result.quantiles()
    print(f"study      {spec.name}   budget {spec.budget:,} parameters", file=out)
    print(f"sampler    {result.sampler}, seed {args.seed}", file=out)
    print(f"proposals  {result.proposals:,} in {result.seconds:.2f} s "
          f"({result.proposals_per_s:,.1f} per second)", file=out)
    print(f"rejected   {result.rejected:,} over budget "
          f"({100 * result.rejection_rate:.1f}%)", file=out)
    if result.inner_draws:
        print(f"redraws    {result.inner_draws:,} drawn inside the sampler for "
              f"{result.proposals:,} proposals ({result.inner_draws / result.proposals:.2f} "
              "per proposal)", file=out)
    if q:
        print("accepted   parameters: " + "  ".join(f"{k} {v:,}" for k, v in q.items()),
              file=out)
        print_histogram(result.n_params, spec.budget, out)
        for label, counts in (("blocks", result.block_types), ("branches", result.branch_drops)):
            total = sum(counts.values())
            print(f"{label:<10} " + "  ".join(f"{k} {100 * n / total:.0f}%"
                                              for k, n in counts.most_common()), file=out)
    return 0


def print_space(spec: StudySpec, out: TextIO) -> None:
    from models import BASELINES

    print(f"study    {spec.name}  ({spec.source})", file=out)
    if spec.description:
        print(f"         {spec.description}", file=out)
    print(f"budget   {spec.limits.describe()}", file=out)
    print(f"sampler  {_options(spec.sampler)}", file=out)
    print(f"pruner   {_options(spec.pruner)}", file=out)
    print(file=out)
    rows = spec.dims()
    width = max(len(key) for key, _, _ in rows)
    for key, dim, condition in rows:
        note = f"   ({condition})" if condition else ""
        print(f"  {key:<{width}}  {dim.kind:<6}  {dim.describe()}{note}", file=out)
    print(file=out)
    print("  final (search promote): " + ", ".join(f"{k} = {v!r}" for k, v in spec.final.items()),
          file=out)
    inside = [name for name, arch in BASELINES.items() if _in_space(spec, arch)]
    print(f"  baselines inside the space: {', '.join(inside) or 'none'}", file=out)


def cmd_baselines(args: argparse.Namespace, out: TextIO) -> int:
    from models import BASELINES, count_flops, count_params
    from models.baselines import PAPERS
    from space import load_spec

    spec = load_spec(args.study)
    print(f"{'name':<28} {'parameters':>11} {'paper':>6} {'vs paper':>8} {'MFLOPs':>8}  "
          f"{'in ' + spec.name:<16} CIFAR-10 accuracy reported", file=out)
    for name, arch in BASELINES.items():
        n = count_params(arch)
        where = ("over-budget" if n > spec.budget else
                 "yes" if _in_space(spec, arch) else "outside-space")
        paper = PAPERS.get(name)
        figure, versus = "-", "-"
        if paper is not None and paper.params:
            figure, versus = f"{paper.params / 1e6:.2g}M", f"{100 * (n / paper.params - 1):+.1f}%"
        print(f"{name:<28} {n:>11,} {figure:>6} {versus:>8} {count_flops(arch) / 1e6:>8.1f}  "
              f"{where:<16} {paper.accuracy if paper else '-'}", file=out)
    print("\nsources and differences:", file=out)
    for name, paper in PAPERS.items():
        if name in BASELINES:
            print(f"  {name}: {paper.source}" + (f"; {paper.note}" if paper.note else ""),
                  file=out)
    print("\narchitectures:", file=out)
    for name, arch in BASELINES.items():
        print(f"  {name}: {arch.describe()}", file=out)
    return 0


def _in_space(spec: StudySpec, arch: ArchConfig) -> bool:
    try:
        spec.arch_params(arch)
    except ValueError:
        return False
    return True


def cmd_data(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    import numpy as np

    from trainers.data import cache_file, download_cifar10, load_cifar10

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.download:
        source = download_cifar10(Path(args.download), progress=say)
    elif args.data:
        source = Path(args.data)
    else:
        raise UsageError("data: give --data PATH (or --download DIR)")
    data = load_cifar10(source, progress=say)
    print(f"source   {data.source}", file=out)
    print(f"sha256   {data.digest}", file=out)
    print(f"cache    {cache_file(data.digest)}", file=out)
    print(f"{'class':<12} {'train':>7} {'test':>7}", file=out)
    for i, name in enumerate(data.classes):
        print(f"{name:<12} {int(np.sum(data.train_labels == i)):>7,} "
              f"{int(np.sum(data.test_labels == i)):>7,}", file=out)
    print(f"{'total':<12} {len(data.train_labels):>7,} {len(data.test_labels):>7,}", file=out)
    return 0


def print_histogram(values: list[int], budget: int, out: TextIO, bins: int = 10,
                    bar: int = 40) -> None:
    """Accepted parameter counts in ``bins`` equal slices of the budget, as bars."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, v * bins // budget)] += 1
    top = max(counts) or 1
    for i, c in enumerate(counts):
        span = f"{_human(budget * i // bins)}-{_human(budget * (i + 1) // bins)}"
        print(f"  {span:>11} {'#' * round(bar * c / top):<{bar}} {c}", file=out)


def _human(n: int) -> str:
    """2500000 -> '2.5M', 12000 -> '12k'."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _options(options: dict[str, object]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in options.items() if k != "type")
    return f"{options.get('type')}" + (f" ({rest})" if rest else "")


class _Progress:
    """A `rich` progress bar of the proposals on stderr, for terminals."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(f"[bold]{label}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task(label, total=None)
        self.bar.start()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        self.bar.stop()
