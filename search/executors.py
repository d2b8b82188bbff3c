"""Where workers run: Ray tasks (the default, and the way past one machine) or local
subprocesses (for machines without Ray). Both run `search.worker.run_worker`.

The driver polls while the workers run, so the live view keeps drawing, and on
Ctrl-C it interrupts them: each worker's running trial is marked FAIL by Optuna
as the interrupt unwinds it, so no trial is left RUNNING.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from search.worker import WorkerConfig, worker_main

Tick = Callable[[], None]
INTERRUPT_WAIT_S = 60  # how long interrupted workers get to mark their trials
RESPAWNS = 3  # restarts of a worker killed by a signal (Ray: retries of its task)


class WorkerError(RuntimeError):
    """A worker stopped with an error (its trials are in the store)."""


class RayUnavailable(ValueError):
    """The Ray cluster named by --ray-address cannot be used (exit code 2)."""


def run_local(configs: list[WorkerConfig], tick: Tick, interval: float = 2.0) -> None:
    """Each worker in its own (spawned) process; returns when all have ended.

    A worker killed by a signal (the OOM killer, ``kill -9``) is started again, up
    to `RESPAWNS` times: its trial is failed by its stale heartbeat and queued again.
    """
    ctx = mp.get_context("spawn")
    configs = [dataclasses.replace(cfg, stop_with_parent=True) for cfg in configs]

    def start(cfg: WorkerConfig) -> Any:
        proc = ctx.Process(target=worker_main, args=(cfg,), name=f"search-worker-{cfg.worker}")
        proc.start()
        return proc

    procs = [start(cfg) for cfg in configs]
    respawns = [0] * len(procs)
    try:
        while True:
            tick()
            for i, proc in enumerate(procs):
                proc.join(timeout=interval / len(procs))
                code = proc.exitcode
                if code is not None and code < 0 and code != -signal.SIGINT \
                        and respawns[i] < RESPAWNS:
                    respawns[i] += 1
                    print(f"search: worker {i} (pid {proc.pid}) was killed by "
                          f"{signal.Signals(-code).name}; starting it again "
                          f"({respawns[i]} of {RESPAWNS})", file=sys.stderr, flush=True)
                    procs[i] = start(configs[i])
            if not any(p.is_alive() for p in procs):
                break
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGINT)  # a terminal sends it too; a test does not
        for proc in procs:
            proc.join(timeout=INTERRUPT_WAIT_S)
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        tick()
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise WorkerError(", ".join(f"{p.name} exited with code {p.exitcode}" for p in failed))


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
    if local:
        address = None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 configure_logging=False, logging_level=logging.ERROR)
    except (ConnectionError, ray.exceptions.AuthenticationError, ValueError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # A wrong token looks like an unreachable cluster from here (Ray logs the
        # refusal on stderr itself), so the hint names both.
        hint = ("; check the address, and that RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH "
                "name the cluster's token")
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {detail}{hint}") \
            from None
    return True


def task_error(err: Exception) -> BaseException:
    """The exception a Ray task raised, out of Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def run_ray(configs: list[WorkerConfig], tick: Tick, *, gpus_per_trial: float,
            cpus_per_trial: float, interval: float = 2.0) -> None:
    """Each worker as a Ray task holding ``gpus_per_trial`` GPUs and ``cpus_per_trial`` CPUs,
    on the Ray instance this process has joined (`init_ray`)."""
    import ray

    from search.worker import run_worker

    # A worker process that dies (kill -9, a lost node) is run again by Ray; an
    # exception the worker raises is not retried.
    task = ray.remote(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial,
                      max_retries=RESPAWNS, retry_exceptions=False)(run_worker)
    refs: list[Any] = [task.remote(cfg) for cfg in configs]
    pending = list(refs)
    try:
        while pending:
            tick()
            _, pending = ray.wait(pending, timeout=interval)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)  # raises KeyboardInterrupt inside the task
        ray.wait(refs, num_returns=len(refs), timeout=INTERRUPT_WAIT_S)
        raise
    finally:
        tick()
    errors = []
    for ref in refs:
        try:
            ray.get(ref)
        except Exception as err:  # the task's own exception, wrapped by Ray
            cause = task_error(err)
            errors.append(f"{type(cause).__name__}: {str(cause).splitlines()[-1]}")
    if errors:
        raise WorkerError("; ".join(errors))
