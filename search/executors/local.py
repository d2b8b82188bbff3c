"""The ``local`` executor: each worker in its own subprocess on this machine.

For machines without Ray (a lent GPU machine cannot be given one), and the
fastest start on one machine. The driver polls while the workers run, so the
live view keeps drawing; on Ctrl-C (or SIGTERM) it stops them with SIGTERM, which
a worker turns into an interrupt: Optuna marks its running trial FAIL as the
interrupt unwinds it. Workers ignore SIGINT, so that a terminal's Ctrl-C, which
reaches every process of the command, interrupts each of them once, through the
driver.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search.executors import base

if TYPE_CHECKING:
    from search.worker import WorkerConfig


# Exit codes of workers this driver stopped (a worker stopped before it set its
# handler ends by the signal itself).
STOPPED = (-signal.SIGINT, -signal.SIGTERM)


@base.register_executor
class LocalExecutor(base.Executor):
    """Workers as spawned subprocesses; tasks in this process."""

    name = "local"

    def placement(self, workers: int | None, gpus_per_worker: float, device: str | None,
                  trials_left: int | None = None) -> base.Placement:
        """One worker per GPU share (``gpus_per_worker`` of a GPU each), else one (or
        ``workers``, at most one per core) sharing the cores."""
        import torch

        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
        if gpus:
            room = int(gpus // gpus_per_worker + 1e-9)
            if room < 1:
                raise base.PlacementError(f"--gpus-per-trial {gpus_per_worker:g}: this machine "
                                          f"has {gpus} GPU(s)")
            n, reduced = base.fit_workers(workers, room, room,
                                          f"{gpus} GPU(s) at {gpus_per_worker:g} each",
                                          trials_left)
            return base.Placement(n, gpus_per_worker, 0.0, None, "this machine", reduced)
        cpus = base.usable_cores()
        n, reduced = base.fit_workers(workers, 1, cpus, f"{cpus} CPU cores", trials_left)
        return base.Placement(n, 0.0, cpus / n, max(1, cpus // n), "this machine", reduced)

    def run_workers(self, configs: list[WorkerConfig], tick: base.Tick) -> None:
        """A worker killed by a signal (the OOM killer, ``kill -9``) is started again:
        its trial is failed by its stale heartbeat and queued again."""
        from search.worker import worker_main

        ctx = mp.get_context("spawn")
        configs = [dataclasses.replace(cfg, stop_with_parent=True) for cfg in configs]

        def start(cfg: WorkerConfig) -> Any:
            proc = ctx.Process(target=worker_main, args=(cfg,),
                               name=f"search-worker-{cfg.worker}")
            # Ignored from its first instruction on (the child inherits it): a Ctrl-C
            # while it imports would print a traceback.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                proc.start()
            finally:
                signal.signal(signal.SIGINT, previous)
            return proc

        procs = [start(cfg) for cfg in configs]
        respawns = [0] * len(procs)
        try:
            while any(p.is_alive() for p in procs):
                tick()
                for i, proc in enumerate(procs):
                    proc.join(timeout=base.poll_s() / len(procs))
                    code = proc.exitcode
                    if code is not None and code < 0 and code not in STOPPED \
                            and respawns[i] < base.RESPAWNS:
                        respawns[i] += 1
                        print(f"search: worker {i} (pid {proc.pid}) was killed by "
                              f"{signal.Signals(-code).name}; starting it again "
                              f"({respawns[i]} of {base.RESPAWNS})", file=sys.stderr, flush=True)
                        procs[i] = start(configs[i])
                    elif code is not None and code > 0:
                        # A worker that gave up (its own message is on stderr): the
                        # others would only meet the same error.
                        _interrupt(procs)
                        break
        except KeyboardInterrupt:
            _interrupt(procs)
            raise
        finally:
            tick()
        # 130: interrupted (by Ctrl-C, or by the driver after another worker failed).
        failed = [p for p in procs if p.exitcode not in (0, None, 130, *STOPPED)]
        if failed:
            raise base.WorkerError(", ".join(f"{p.name} exited with code {p.exitcode}"
                                        for p in failed))

    def call(self, fn: Callable[[Any], base.T], arg: Any, *, gpus: float, what: str,
             say: Callable[[str], None]) -> base.T:
        return fn(arg)


def _interrupt(procs: list[Any]) -> None:
    """SIGTERM to every live worker (see `search.worker.worker_main`), then wait; SIGKILL
    to one that has not ended after `base.INTERRUPT_WAIT_S`."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(timeout=base.INTERRUPT_WAIT_S)
        if proc.is_alive():
            proc.kill()
