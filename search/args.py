"""What the command modules share: the usage error, argument types, the store lookup."""

from __future__ import annotations

import argparse
from collections.abc import Callable

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


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


def study_from_store(args: argparse.Namespace) -> object:
    from search.storage import load_study, resolve_storage_url

    name = args.study
    if name.endswith(".toml") or "/" in name:
        from space import load_spec

        name = load_spec(name).name
    return load_study(resolve_storage_url(args.storage, name, create=False), name)


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """--study and --storage of the commands that read a study from its store."""
    parser.add_argument("--study", default="resnet-budget",
                        help="study name in the store (or a study file / built-in name)")
    parser.add_argument("--storage", metavar="URL", help="store URL (as for run)")
