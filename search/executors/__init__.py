"""Executors: where the search's workers and promote's training run.

`EXECUTORS` maps a name to an `Executor` subclass; importing this package
registers ``ray`` and ``local``. To add one, subclass `Executor` in a module
here, decorate it with `register_executor`, and import the module below.
"""

from __future__ import annotations

from search.executors import local, ray_cluster
from search.executors.base import (
    EXECUTORS,
    Executor,
    Placement,
    PlacementError,
    WorkerError,
    make_executor,
    register_executor,
)
from search.executors.ray_cluster import RayUnavailable, init_ray, task_error

__all__ = [
    "EXECUTORS",
    "Executor",
    "Placement",
    "PlacementError",
    "RayUnavailable",
    "WorkerError",
    "init_ray",
    "local",
    "make_executor",
    "ray_cluster",
    "register_executor",
    "task_error",
]
