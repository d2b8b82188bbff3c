"""Where the data set is, when a command is not told: the environment, then usual places."""

from __future__ import annotations

import os
from pathlib import Path

from trainers.safeio import DataError

DATA_ENV = "SEARCH_DATA"
# Looked for, in this order, when neither --data nor $SEARCH_DATA is given.
DATA_CANDIDATES = ("data/cifar-10-python.tar.gz", "data/cifar-10-batches-py",
                   "data/cifar10-jpeg.tar.gz", "data/cifar10")


def find_data(given: str | None, *, recorded: str | None = None) -> str:
    """``given`` (--data), else $SEARCH_DATA, else ``recorded``, else the first of
    `DATA_CANDIDATES` that exists.

    Args:
        given: the path the user passed, if any; returned as it is.
        recorded: the data set a trial or run was trained on; taken only if it
            still exists.

    Raises:
        DataError: none of them gives a data set.
    """
    if given:
        return given
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    if recorded and Path(recorded).exists():
        return recorded
    for candidate in DATA_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise DataError("no data", f"pass --data PATH, set ${DATA_ENV}, or put the data at one of "
                    f"{', '.join(DATA_CANDIDATES)}")
