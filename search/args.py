"""What the command modules share: the usage error, argument types, the store lookup."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an argument error is one line (argparse prints the usage first, which
    buries the error); subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"search: error: {message}{hint}\n")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low..high`` (a port, say)."""

    def parse(text: str) -> int:
        value = int_at_least(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


def study_name(text: str) -> str:
    """An argparse type: a study name, under the rule of the study file's ``[study].name``
    (it names a folder under ``runs/``)."""
    from space.spec import study_name_problem

    problem = study_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_device(args: argparse.Namespace) -> None:
    """``--device cuda`` needs a GPU here, unless the work goes to a Ray cluster's nodes."""
    if getattr(args, "device", None) != "cuda" or getattr(args, "ray_address", None):
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to this machine "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}"
                         "); use --device cpu, or leave --device out")


def int_at_least(low: int) -> Callable[[str], int]:
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


def store_study_name(args: argparse.Namespace) -> str:
    """The study's name in the store: --study-name, else the study file's, else --study."""
    if getattr(args, "study_name", None):
        return str(args.study_name)
    name = str(args.study)
    if name.endswith(".toml") or "/" in name:
        from space import load_spec

        name = load_spec(name).name
    return name


def study_from_store(args: argparse.Namespace) -> object:
    from search.storage import load_study, resolve_storage_url

    name = store_study_name(args)
    return load_study(resolve_storage_url(args.storage, name, create=False), name)


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """--study, --study-name and --storage of the commands that read a study's store."""
    parser.add_argument("--study", default="resnet-budget",
                        help="study name in the store (or a study file / built-in name)")
    parser.add_argument("--study-name", type=study_name,
                        help="name in the store (default: the study file's, else --study)")
    parser.add_argument("--storage", metavar="URL", help="store URL (as for run)")


def env_seconds(name: str, default: float, error: type[Exception], *,
                high: float = float("inf")) -> float:
    """Seconds from the environment knob ``$name``, else ``default``.

    Raises:
        error: the value is not a number of seconds > 0 (and <= ``high``).
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= high or value == float("inf"):  # also refuses nan
        bound = f" and <= {high:g}" if high < float("inf") else ""
        raise error(f"${name}: must be a number of seconds > 0{bound}, got {text!r}")
    return value


def os_reason(err: OSError) -> str:
    """Why a file operation failed, to end a one-line message ("no space left on device")."""
    why = err.strerror or str(err) or type(err).__name__
    return why[:1].lower() + why[1:]


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number with ``low < value <= high`` (a GPU share, say)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not low < value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be > {low:g} and <= {high:g}, got {text}")
        return value

    return parse
