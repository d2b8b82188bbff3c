"""The ``search`` command line.

Bad input (an unknown study, an invalid study file, a bad argument) ends with a
one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from models import ArchConfig
    from space import StudySpec

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search",
        description="Search for the most accurate CIFAR-10 ResNet under a parameter budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    space = sub.add_parser(
        "space", help="show a study's search space; --sample N dry-runs its sampler",
        description="Show a study's search space. With --sample N, propose N candidates "
        "(no training) and report proposals per second, the rejection rate and the spread "
        "of accepted parameter counts.",
    )
    space.add_argument("--study", default="resnet-budget",
                       help="built-in study name or path to a study file (default: %(default)s)")
    space.add_argument("--sample", type=_int_at_least(1), metavar="N",
                       help="dry run: propose N candidates")
    space.add_argument("--seed", type=_int_at_least(0), default=0, help="sampler seed (default: 0)")
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

    run = sub.add_parser(
        "run", help="run (or continue) a search",
        description="Run a study's search: workers train candidates and the pruner stops "
        "weak ones; every trial goes to the store. Running the same command again "
        "continues up to --n-trials.",
    )
    run.add_argument("--study", default="resnet-budget", help="built-in name or study file")
    run.add_argument("--storage", metavar="URL",
                     help="store URL (default: $SEARCH_STORAGE, else sqlite under runs/STUDY/)")
    run.add_argument("--study-name", help="name in the store (default: the study file's name)")
    run.add_argument("--n-trials", type=_int_at_least(1),
                     help="finished trials the whole study should reach (default: the study "
                     "file's n_trials, else 100)")
    run.add_argument("--timeout", type=_int_at_least(1), metavar="S",
                     help="start no new trial after S seconds")
    run.add_argument("--workers", type=_int_at_least(1), metavar="K",
                     help="parallel workers (default: one per GPU, else 1)")
    run.add_argument("--gpus-per-trial", type=float, default=1.0, metavar="G",
                     help="GPUs each Ray worker holds; fractions share a GPU (default: 1)")
    run.add_argument("--executor", choices=("ray", "local"), default="ray",
                     help="'ray' (default) or 'local' subprocesses, for machines without Ray")
    run.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster")
    run.add_argument("--data", metavar="PATH",
                     help="CIFAR-10 data (default: $SEARCH_DATA, else data/...)")
    run.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")
    run.add_argument("--seed", type=_int_at_least(0), help="sampler seed")
    run.add_argument("--no-baselines", action="store_true",
                     help="do not queue the named baselines as a new study's first trials")
    run.add_argument("--trainer", default=None, help=argparse.SUPPRESS)  # benchmarks, tests
    run.set_defaults(func=cmd_run)

    for command, text in (("trials", "list a study's trials"),
                          ("best", "show a study's best trials")):
        listing = sub.add_parser(command, help=text, description=text + " from the store.")
        listing.add_argument("--study", default="resnet-budget",
                             help="study name in the store (or a study file / built-in name)")
        listing.add_argument("--storage", metavar="URL", help="store URL (as for run)")
        listing.add_argument("--top", type=_int_at_least(1), default=10 if command == "best"
                             else 10**9, help=argparse.SUPPRESS if command == "trials"
                             else "how many (default: 10)")
        listing.set_defaults(func=cmd_trials if command == "trials" else cmd_best)

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on the store",
                          description="Start optuna-dashboard on the study store.")
    dash.add_argument("--storage", metavar="URL",
                      help="store URL (default: $SEARCH_STORAGE, else runs/STUDY/study.db)")
    dash.add_argument("--study", default="resnet-budget",
                      help="study whose default store to open when no URL is given")
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    dash.add_argument("--port", type=_int_at_least(1), default=8080)
    dash.set_defaults(func=cmd_dashboard)
    add_result_commands(sub)
    return parser


def add_result_commands(sub: argparse._SubParsersAction) -> None:
    """promote, evaluate, predict, report: what comes after the search."""
    promote = sub.add_parser(
        "promote", help="train a trial in full (the study's [final] recipe, 200 epochs)",
        description="Rebuild trial TRIAL's architecture and recipe from the store, apply the "
        "study file's [final] recipe and train it with a checkpoint every epoch into "
        "runs/STUDY/trial-TRIAL/ (config.json, checkpoint.pt, model.pt, metrics.csv, "
        "curves.png, confusion.png, summary.json). The same command after a crash resumes; "
        "the test accuracy is written back to the trial as promoted_test_acc.",
    )
    promote.add_argument("trial", type=_int_at_least(0), metavar="TRIAL", help="trial number")
    promote.add_argument("--study", default="resnet-budget", help="built-in name or study file")
    promote.add_argument("--storage", metavar="URL", help="store URL (as for run)")
    promote.add_argument("--study-name", help="name in the store (default: the study file's)")
    promote.add_argument("--epochs", type=_int_at_least(1),
                         help="epochs (default: the study file's [final] epochs)")
    promote.add_argument("--data", metavar="PATH", help="CIFAR-10 data (as for run)")
    promote.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")
    promote.add_argument("--ray-address", metavar="ADDR",
                         help="train as a Ray task on this cluster ('local' starts one)")
    promote.add_argument("--restart", action="store_true",
                         help="discard the run folder's checkpoint and train from scratch")
    promote.add_argument("--out", metavar="DIR", help="run folder (default: runs/STUDY/trial-N)")
    promote.set_defaults(func=cmd_promote)

    evaluate = sub.add_parser(
        "evaluate", help="test accuracy, per class, and a confusion matrix PNG",
        description="Evaluate a run folder, its model.pt or a checkpoint on a data set's "
        "test split: accuracy, per-class accuracy, and confusion.png plus evaluation.json "
        "in --out.",
    )
    _model_arguments(evaluate)
    evaluate.add_argument("--data", metavar="PATH",
                          help="labelled CIFAR-10 data (default: the run's own data set)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="where the PNG and JSON go (default: RUN/eval-DATANAME)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="predict labels for unlabelled images as ID,Labels CSV",
        description="Predict the classes of unlabelled images: a pickle dict with b'data' "
        "(N x 32 x 32 x 3 uint8) and b'ids', or a folder of 32x32 images (ids: file names).",
    )
    _model_arguments(predict)
    predict.add_argument("--input", required=True, metavar="FILE",
                         help="course-format pickle or image folder")
    predict.add_argument("--out", default="submission.csv", metavar="CSV",
                         help="output CSV (default: %(default)s)")
    predict.set_defaults(func=cmd_predict)

    report = sub.add_parser(
        "report", help="Pareto plot and a table of the top trials",
        description="Plot validation accuracy against parameters (pareto.png, baselines "
        "marked) and write a markdown table of the top trials (report.md).",
    )
    report.add_argument("--study", default="resnet-budget",
                        help="study name in the store (or a study file / built-in name)")
    report.add_argument("--storage", metavar="URL", help="store URL (as for run)")
    report.add_argument("--top", type=_int_at_least(1), default=10,
                        help="trials in the table (default: 10)")
    report.add_argument("--out", metavar="DIR", help="where to write (default: runs/STUDY/)")
    report.set_defaults(func=cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``search`` console script."""
    from models import ConfigError
    from search.executors import RayUnavailable
    from search.promote import PromoteError
    from search.report import ReportError
    from search.run import RunError
    from search.storage import StorageError
    from space import SpecError
    from trainers.checkpoint import CheckpointError
    from trainers.safeio import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, sys.stdout) or 0)
    except (SpecError, DataError, StorageError, RunError, UsageError, PromoteError, ReportError,
            CheckpointError, ConfigError, RayUnavailable) as err:
        print(f"search: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("search: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `search trials | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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
    return 0


def print_space(spec: StudySpec, out: TextIO) -> None:
    from models import BASELINES

    print(f"study    {spec.name}  ({spec.source})", file=out)
    if spec.description:
        print(f"         {spec.description}", file=out)
    print(f"budget   {spec.budget:,} parameters", file=out)
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
    from space import load_spec

    spec = load_spec(args.study)
    print(f"{'name':<18} {'parameters':>11} {'MFLOPs':>8}  {'in ' + spec.name:<18} architecture",
          file=out)
    for name, arch in BASELINES.items():
        n = count_params(arch)
        where = ("over budget" if n > spec.budget else
                 "yes" if _in_space(spec, arch) else "outside space")
        print(f"{name:<18} {n:>11,} {count_flops(arch) / 1e6:>8.1f}  {where:<18} "
              f"{arch.describe()}", file=out)
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


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from search.run import RunOptions, run_search
    from search.worker import TRAINER

    return run_search(RunOptions(
        study=args.study, storage=args.storage, study_name=args.study_name,
        n_trials=args.n_trials, timeout=args.timeout, workers=args.workers,
        gpus_per_trial=args.gpus_per_trial, executor=args.executor,
        ray_address=args.ray_address, data=args.data, device=args.device, seed=args.seed,
        baselines=not args.no_baselines, trainer=args.trainer or TRAINER,
    ), out)


def _study_from_store(args: argparse.Namespace) -> object:
    from search.storage import load_study, resolve_storage_url

    name = args.study
    if name.endswith(".toml") or "/" in name:
        from space import load_spec

        name = load_spec(name).name
    return load_study(resolve_storage_url(args.storage, name, create=False), name)


def cmd_trials(args: argparse.Namespace, out: TextIO) -> int:
    from search.live import describe

    study = _study_from_store(args)
    print(f"{'trial':>5} {'state':<8} {'epoch':>5} {'val_acc':>8} {'params':>7}  "
          "architecture / reason", file=out)
    for trial in study.get_trials(deepcopy=False):  # type: ignore[attr-defined]
        print(describe(trial), file=out)
    return 0


def cmd_best(args: argparse.Namespace, out: TextIO) -> int:
    from optuna.trial import TrialState

    from search.live import describe

    study = _study_from_store(args)
    done = [t for t in study.get_trials(deepcopy=False,  # type: ignore[attr-defined]
                                        states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        raise UsageError(f"study {args.study!r} has no complete trial yet")
    print(f"{'trial':>5} {'state':<8} {'epoch':>5} {'val_acc':>8} {'params':>7}  architecture",
          file=out)
    for trial in sorted(done, key=lambda t: -(t.value or 0.0))[:args.top]:
        print(describe(trial), file=out)
    return 0


def cmd_dashboard(args: argparse.Namespace, out: TextIO) -> int:
    from search.storage import mask_url, open_storage, resolve_storage_url

    url = resolve_storage_url(args.storage, args.study, create=False)
    if args.host in ("0.0.0.0", "::"):
        print(f"search: warning: the dashboard on {args.host} is open to every network this "
              "machine is on, with no login", file=sys.stderr)
    storage = open_storage(url, heartbeat=False)
    print(f"dashboard for {mask_url(url)} at http://{args.host}:{args.port}/", file=out,
          flush=True)
    from optuna_dashboard import run_server

    run_server(storage, host=args.host, port=args.port)
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """What evaluate and predict share: the trained model, and where it runs."""
    parser.add_argument("model", metavar="RUN_OR_CKPT",
                        help="run folder, model.pt (config.json beside it) or checkpoint.pt")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")


def cmd_promote(args: argparse.Namespace, out: TextIO) -> int:
    from search.promote import PromoteOptions, promote

    return promote(PromoteOptions(
        trial=args.trial, study=args.study, storage=args.storage, study_name=args.study_name,
        epochs=args.epochs, data=args.data, device=args.device, ray_address=args.ray_address,
        restart=args.restart, out=args.out,
    ), out)


def cmd_evaluate(args: argparse.Namespace, out: TextIO) -> int:
    from search.evaluate import evaluate_run, print_evaluation

    print_evaluation(evaluate_run(args.model, args.data, args.out, args.device, out), out)
    return 0


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    from search.evaluate import predict_file

    predict_file(args.model, args.input, args.out, args.device, out)
    return 0


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from search.report import write_report
    from search.storage import RUNS_DIR

    study = _study_from_store(args)
    budget = None
    try:
        from space import load_spec

        budget = load_spec(args.study).budget
    except ValueError:  # a study only in the store, with no file: plot without the budget
        pass
    folder = Path(args.out) if args.out else RUNS_DIR / study.study_name  # type: ignore[attr-defined]
    report = write_report(study, folder, budget=budget, top=args.top)  # type: ignore[arg-type]
    print(report.markdown, file=out)
    print(f"written  {report.pareto_png}, {report.table_md}", file=out)
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
    """A one-line progress counter on stderr, for terminals."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            sys.stderr.write(f"\r{self.label}: {done}/{total}")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
