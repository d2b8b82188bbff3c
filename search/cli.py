"""The ``search`` command line.

Bad input (an unknown study, an invalid study file, a bad argument) ends with a
one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from search.args import (
    EXIT_USAGE,
    Parser,
    UsageError,
    check_device,
    float_in,
    int_at_least,
    int_in,
    store_arguments,
    store_study_name,
    study_from_store,
    study_name,
)
from search.results.cli import add_result_commands
from search.space_cli import add_space_commands


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="search",
        description="Search for the most accurate CIFAR-10 ResNet under a parameter budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_space_commands(sub)

    run = sub.add_parser(
        "run", help="run (or continue) a search",
        description="Run a study's search: workers train candidates and the pruner stops "
        "weak ones; every trial goes to the store. Running the same command again "
        "continues up to --n-trials.",
    )
    run.add_argument("--study", default="resnet-budget", help="built-in name or study file")
    run.add_argument("--storage", metavar="URL",
                     help="store URL (default: $SEARCH_STORAGE, else sqlite under runs/STUDY/)")
    run.add_argument("--study-name", type=study_name,
                     help="name in the store (default: the study file's name)")
    run.add_argument("--n-trials", type=int_at_least(1),
                     help="finished trials the whole study should reach (default: the study "
                     "file's n_trials, else 100)")
    run.add_argument("--timeout", type=int_at_least(1), metavar="S",
                     help="start no new trial after S seconds")
    run.add_argument("--workers", type=int_at_least(1), metavar="K",
                     help="parallel workers (default: one per GPU, else 1)")
    # A worker trains on one device: more than a node's GPUs could never be placed.
    run.add_argument("--gpus-per-trial", type=float_in(0.0, 8.0), default=1.0, metavar="G",
                     help="GPUs each worker holds, > 0 and <= 8; fractions share a GPU "
                     "(default: 1)")
    run.add_argument("--executor", choices=executor_names(), default="ray",
                     help="'ray' (default) or 'local' subprocesses, for machines without Ray")
    run.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster")
    run.add_argument("--data", metavar="PATH",
                     help="CIFAR-10 data (default: $SEARCH_DATA, else data/...)")
    run.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")
    run.add_argument("--seed", type=int_at_least(0), help="sampler seed")
    run.add_argument("--no-baselines", action="store_true",
                     help="do not queue the named baselines as a new study's first trials")
    run.add_argument("--allow-space-change", action="store_true",
                     help="run although the study file's space or budget differs from the one "
                     "the study was started with (its trials then mix both)")
    run.add_argument("--warm-start", type=warm_start, metavar="STUDY[:K]",
                     help="queue the best K (default 5) trials of another study in the same "
                     "store first, where they fit this space and budget")
    run.add_argument("--tensorboard", metavar="DIR",
                     help="write TensorBoard event files per trial to DIR/STUDY/trial-N "
                     "(per-epoch scalars, hyperparameters; needs the tensorboard extra)")
    run.add_argument("--trainer", default=None, help=argparse.SUPPRESS)  # benchmarks, tests
    run.set_defaults(func=cmd_run)

    for command, text in (("trials", "list a study's trials"),
                          ("best", "show a study's best trials")):
        listing = sub.add_parser(command, help=text, description=text + " from the store.")
        store_arguments(listing)
        listing.add_argument("--top", type=int_at_least(1), default=10 if command == "best"
                             else 10**9, help=argparse.SUPPRESS if command == "trials"
                             else "how many (default: 10)")
        listing.set_defaults(func=cmd_trials if command == "trials" else cmd_best)

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on the store",
                          description="Start optuna-dashboard on the study store.")
    dash.add_argument("--storage", metavar="URL",
                      help="store URL (default: $SEARCH_STORAGE, else runs/STUDY/study.db)")
    dash.add_argument("--study", default="resnet-budget",
                      help="study whose default store to open when no URL is given")
    dash.add_argument("--study-name", type=study_name,
                      help="name in the store (default: the study file's, else --study)")
    dash.add_argument("--artifacts", metavar="DIR_OR_URL",
                      help="artifact store whose files the trial pages list (default: the "
                      "one the study recorded, else artifacts/ beside an SQLite store)")
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    dash.add_argument("--port", type=int_in(1, 65535), default=8080)
    dash.set_defaults(func=cmd_dashboard)
    add_result_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``search`` console script."""
    from models import ConfigError
    from search.executors import PlacementError, RayUnavailable
    from search.results.promote import PromoteError
    from search.results.report import ReportError
    from search.storage import StorageError
    from space import SpecError
    from trainers.rundir import CheckpointError
    from trainers.safeio import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_device(args)
        return int(args.func(args, sys.stdout) or 0)
    except (SpecError, DataError, StorageError, UsageError, PromoteError, ReportError,
            CheckpointError, ConfigError, RayUnavailable, PlacementError) as err:
        print(f"search: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("search: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `search trials | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def warm_start(text: str) -> tuple[str, int]:
    """``--warm-start STUDY[:K]`` as (STUDY, K); K in 1..100, default 5."""
    name, _, count = text.partition(":")
    if not name or (count and not count.isdigit()) or not 1 <= int(count or 5) <= 100:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be STUDY or STUDY:K with K in 1..100 (such as old-study:10)")
    return name, int(count or 5)


def executor_names() -> tuple[str, ...]:
    from search.executors import EXECUTORS

    return tuple(EXECUTORS)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from search.run import RunOptions, run_search
    from trainers.protocol import load_trainer

    try:
        trainer = load_trainer(args.trainer) if args.trainer else None
    except ValueError as err:
        raise UsageError(f"--trainer: {err}") from None
    if args.tensorboard:
        tensorboard_ready(args.tensorboard)
    return run_search(RunOptions(
        study=args.study, storage=args.storage, study_name=args.study_name,
        n_trials=args.n_trials, timeout=args.timeout, workers=args.workers,
        gpus_per_trial=args.gpus_per_trial, executor=args.executor,
        ray_address=args.ray_address, data=args.data, device=args.device, seed=args.seed,
        baselines=not args.no_baselines, trainer=trainer,
        allow_space_change=args.allow_space_change, warm_start=args.warm_start,
        tensorboard=args.tensorboard,
    ), out)


def tensorboard_ready(folder: str) -> None:
    """``--tensorboard DIR``: the package is there and DIR can be a folder (exit 2 else)."""
    from search.tensorboard import TensorBoardMissing, check_available

    try:
        check_available()
    except TensorBoardMissing as err:
        raise UsageError(str(err)) from None
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--tensorboard {folder}: exists and is not a folder")


def cmd_trials(args: argparse.Namespace, out: TextIO) -> int:
    from search import record

    study = study_from_store(args)
    print(record.HEADER, file=out)
    for trial in study.get_trials(deepcopy=False):  # type: ignore[attr-defined]
        print(record.describe(trial), file=out)
    return 0


def cmd_best(args: argparse.Namespace, out: TextIO) -> int:
    from search import api, record, stopping

    study = study_from_store(args)
    trials = study.get_trials(deepcopy=False)  # type: ignore[attr-defined]
    multi = len(study.directions) > 1  # type: ignore[attr-defined]
    try:
        best = api.best(args.study, top=args.top, storage=args.storage,
                        study_name=args.study_name)
    except api.Error as err:
        raise err.__cause__ or UsageError(str(err)) from None
    if multi:
        names = study.metric_names or [f"objective {i}" for i in range(  # type: ignore[attr-defined]
            len(study.directions))]  # type: ignore[attr-defined]
        print(f"Pareto front of {' vs '.join(names)}: {len(record.pareto_front(trials))} "
              f"trial(s), none beaten on every objective by another; most accurate first "
              "(any of them can be promoted)", file=out)
    print(record.COLUMNS + "architecture", file=out)
    for trial in best:
        print(record.describe(trial), file=out)
    if not multi:
        for line in stopping.lines(trials):
            print(line, file=out)
    return 0


def cmd_dashboard(args: argparse.Namespace, out: TextIO) -> int:
    from search.storage import mask_url, open_storage, resolve_storage_url

    check_listen(args.host, args.port)
    url = resolve_storage_url(args.storage, store_study_name(args), create=False)
    if args.host in ("0.0.0.0", "::", ""):
        print(f"search: warning: the dashboard on {args.host} is open to every network this "
              "machine is on, with no login", file=sys.stderr)
    storage = open_storage(url, heartbeat=False)
    artifacts = dashboard_artifacts(storage, url, store_study_name(args), args.artifacts)
    print(f"dashboard for {mask_url(url)} at http://{args.host}:{args.port}/ (artifacts: "
          f"{artifacts[0]})", file=out, flush=True)
    from optuna_dashboard import run_server

    run_server(storage, host=args.host, port=args.port, artifact_store=artifacts[1])
    return 0


def dashboard_artifacts(storage: Any, url: str, name: str,
                        given: str | None) -> tuple[str, Any]:
    """The artifact store the dashboard serves: ``given``, else the study's recorded
    one, else the default beside the store; (location, store)."""
    from search.dashboard import (
        ARTIFACT_STORE,
        ArtifactStoreError,
        default_location,
        open_artifact_store,
    )

    location = given
    if location is None:
        try:
            study_id = storage.get_study_id_from_name(name)
            location = storage.get_study_system_attrs(study_id).get(ARTIFACT_STORE)
        except KeyError:  # no such study (yet): the default place
            location = None
    location = location or default_location(url, name)
    try:
        return location, open_artifact_store(location)
    except ArtifactStoreError as err:
        raise UsageError(f"--artifacts: {err}") from None


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once, so that a port in use or a foreign address is one line
    here and not a traceback from inside the dashboard's server."""
    import socket

    try:
        # The address family as the dashboard's server (bottle's wsgiref) picks it; "" is
        # every address.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # as wsgiref's server does, so that a port in TIME_WAIT does not count as taken
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({reason})") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
