"""The ``ray`` executor: workers and tasks on a Ray cluster (the default, and the way
past one machine).

``--ray-address`` joins a running cluster; without it the command starts a private
Ray instance and stops it at the end. Workers are sized from the cluster's
resources, not from the machine the command runs on (which may hold neither).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search.executors.base import (
    INTERRUPT_WAIT_S,
    RESPAWNS,
    Executor,
    Placement,
    PlacementError,
    T,
    Tick,
    WorkerError,
    fit_workers,
    poll_s,
    register_executor,
)

if TYPE_CHECKING:
    from search.worker import WorkerConfig



class RayUnavailable(ValueError):
    """The Ray cluster named by --ray-address cannot be used (exit code 2)."""


def init_ray(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local instance; True if this call did.

    A local instance listens on this machine's network address, not only on
    loopback, so it runs with Ray's token authentication (a token is made in
    ``~/.ray/auth_token`` if there is none) unless ``RAY_AUTH_MODE`` says otherwise.
    Joining a cluster uses the token the environment names (``RAY_AUTH_TOKEN_PATH``).

    Raises:
        RayUnavailable: the cluster cannot be reached or refuses this process.
    """
    local = address in (None, "", "local")
    if local and "RAY_AUTH_MODE" not in os.environ:
        # Before Ray reads its configuration: the driver and the processes it starts
        # must agree on the mode.
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:
            from ray._raylet import Config  # type: ignore[attr-defined]

            Config.initialize("")
    import ray

    if ray.is_initialized():
        return False
    # Ray's driver puts its own SIGTERM handler in place of the caller's (a stack dump,
    # then death by the signal, which leaves trials RUNNING and the workers training);
    # `search run`'s handler stops the workers as Ctrl-C does, so it is put back.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=None if local else address, include_dashboard=False,
                 log_to_driver=True, configure_logging=False, logging_level=logging.ERROR)
    except (ConnectionError, ray.exceptions.AuthenticationError, ValueError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # A wrong token looks like an unreachable cluster from here (Ray logs the
        # refusal on stderr itself), so the hint names both.
        hint = ("; check the address, and that RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH "
                "name the cluster's token")
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {detail}{hint}") \
            from None
    finally:
        if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
    return True


def task_error(err: Exception) -> BaseException:
    """The exception a Ray task raised, out of Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


@register_executor
class RayExecutor(Executor):
    """Each worker a Ray task holding its GPUs (or a CPU share); one task per `call`."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        super().__init__(address)
        self._started: bool | None = None  # None: not joined yet

    def _join(self) -> None:
        if self._started is None:
            self._started = init_ray(self.address)

    @property
    def where(self) -> str:
        joined = self.address not in (None, "", "local")
        return f"Ray cluster at {self.address}" if joined else "a local Ray instance"

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
        self._started = None

    def placement(self, workers: int | None, gpus_per_worker: float, device: str | None,
                  trials_left: int | None = None) -> Placement:
        import ray

        self._join()
        total = ray.cluster_resources()
        gpus = float(total.get("GPU", 0.0)) if device != "cpu" else 0.0
        if gpus:
            room = int(gpus // gpus_per_worker + 1e-9)
            if room < 1:  # Ray would wait for the GPUs for ever
                raise PlacementError(f"--gpus-per-trial {gpus_per_worker:g}: the {self.where} "
                                     f"has {gpus:g} GPU(s)")
            n, reduced = fit_workers(workers, room, room,
                                     f"{gpus:g} GPU(s) at {gpus_per_worker:g} each", trials_left)
            return Placement(n, gpus_per_worker, 0.0, None, self.where, reduced)
        # A CPU share that fits on one node, so that K workers on fewer cores all run at once.
        node_cpus = max((float(node["Resources"].get("CPU", 0.0)) for node in ray.nodes()
                         if node["Alive"]), default=0.0)
        if node_cpus <= 0:
            raise PlacementError(f"the {self.where} has neither GPUs nor CPUs to run workers on")
        cpus = max(1, int(total.get("CPU", 0.0)))
        n, reduced = fit_workers(workers, 1, cpus, f"{cpus} CPU cores", trials_left)
        share = min(float(total.get("CPU", 0.0)) / n, node_cpus)
        return Placement(n, 0.0, share, max(1, int(share)), self.where, reduced)

    def run_workers(self, configs: list[WorkerConfig], tick: Tick) -> None:
        """Each worker's resources come from ``cfg.placement``; a worker process that dies
        (kill -9, a lost node) is run again by Ray, an exception it raises is not."""
        import ray

        from search.worker import run_worker

        self._join()
        refs: list[Any] = []
        for cfg in configs:
            task = ray.remote(num_gpus=cfg.gpus, num_cpus=cfg.cpus, max_retries=RESPAWNS,
                              retry_exceptions=False)(run_worker)
            refs.append(task.remote(cfg))
        pending = list(refs)
        errors: list[str] = []
        try:
            while pending:
                tick()
                ready, pending = ray.wait(pending, timeout=poll_s())
                errors += [e for e in map(_error_of, ready) if e]
                if errors and pending:  # a worker gave up: the others would meet the same
                    for ref in pending:
                        ray.cancel(ref)
                    ray.wait(pending, num_returns=len(pending), timeout=INTERRUPT_WAIT_S)
                    pending = []
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)  # raises KeyboardInterrupt inside the task
            ray.wait(refs, num_returns=len(refs), timeout=INTERRUPT_WAIT_S)
            raise
        finally:
            tick()
        if errors:
            raise WorkerError("; ".join(errors))

    def call(self, fn: Callable[[Any], T], arg: Any, *, gpus: float, what: str,
             say: Callable[[str], None]) -> T:
        import ray

        self._join()
        held = gpus if ray.cluster_resources().get("GPU", 0) >= gpus > 0 else 0
        task = ray.remote(num_gpus=held, num_cpus=0 if held else 1, max_retries=0)(fn)
        say(f"training {what} as a Ray task on the {self.where} "
            f"({f'{held:g} GPU' if held else 'CPU'})")
        try:
            result: T = ray.get(task.remote(arg))
        except ray.exceptions.RayTaskError as err:
            raise task_error(err) from None
        return result


def _error_of(ref: Any) -> str:
    """The task's own exception as one line, or "" if it ended well."""
    import ray

    try:
        ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return ""
    except Exception as err:  # the task's own exception, wrapped by Ray
        cause = task_error(err)
        return f"{type(cause).__name__}: {str(cause).splitlines()[-1] if str(cause) else ''}"
    return ""
