"""Where a benchmark's figures go: JSON under benchmarks/results/, with their origin.

Every record carries the date, the command that made it and the machine, so a
figure can always be traced back (scripts import this as a sibling module).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def today() -> str:
    return dt.date.today().isoformat()


def machine(**versions: str) -> dict[str, Any]:
    """This machine, plus the versions of the libraries the figures depend on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
    }


def save(benchmark: str, stem: str, fields: dict[str, Any], **versions: str) -> Path:
    """Write ``results/<stem>-<date>.json`` and say where."""
    record = {
        "benchmark": benchmark,
        "date": today(),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "machine": machine(**versions),
        **fields,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stem}-{today()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out}")
    return out


@contextmanager
def process_map(jobs: int, initializer: Callable[..., None],
                initargs: tuple[Any, ...] = ()) -> Iterator[Callable[..., Iterator[Any]]]:
    """A ``map`` over ``jobs`` worker processes, each set up by ``initializer``; with one
    job, the plain ``map`` in this process: nothing is forked, so a caller whose torch has
    started its threads (a test session) cannot deadlock a child."""
    if jobs == 1:
        initializer(*initargs)
        yield map
        return
    with ProcessPoolExecutor(jobs, initializer=initializer, initargs=initargs) as pool:
        yield pool.map
