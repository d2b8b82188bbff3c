"""The ``local`` executor: each worker in its own subprocess on this machine.

For machines without Ray (a lent GPU machine cannot be given one), and the
fastest start on one machine. The driver polls while the workers run, so the
live view keeps drawing; on Ctrl-C it interrupts them, and each worker's running
trial is marked FAIL by Optuna as the interrupt unwinds it.
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



@base.register_executor
class LocalExecutor(base.Executor):
    """Workers as spawned subprocesses; tasks in this process."""

    name = "local"

    def placement(self, workers: int | None, gpus_per_worker: float,
                  device: str | None) -> base.Placement:
        """One worker per local GPU, else one (or ``workers``) sharing the cores."""
        import torch

        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
        n = workers or max(1, gpus)
        cpus = os.cpu_count() or 1
        return base.Placement(n, 1.0 if gpus else 0.0, 0.0 if gpus else cpus / n,
                         None if gpus else max(1, cpus // n), "this machine")

    def run_workers(self, configs: list[WorkerConfig], tick: base.Tick) -> None:
        """A worker killed by a signal (the OOM killer, ``kill -9``) is started again:
        its trial is failed by its stale heartbeat and queued again."""
        from search.worker import worker_main

        ctx = mp.get_context("spawn")
        configs = [dataclasses.replace(cfg, stop_with_parent=True) for cfg in configs]

        def start(cfg: WorkerConfig) -> Any:
            proc = ctx.Process(target=worker_main, args=(cfg,),
                               name=f"search-worker-{cfg.worker}")
            proc.start()
            return proc

        procs = [start(cfg) for cfg in configs]
        respawns = [0] * len(procs)
        try:
            while any(p.is_alive() for p in procs):
                tick()
                for i, proc in enumerate(procs):
                    proc.join(timeout=base.POLL_S / len(procs))
                    code = proc.exitcode
                    if code is not None and code < 0 and code != -signal.SIGINT \
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
        failed = [p for p in procs if p.exitcode not in (0, None, 130, -signal.SIGINT)]
        if failed:
            raise base.WorkerError(", ".join(f"{p.name} exited with code {p.exitcode}"
                                        for p in failed))

    def call(self, fn: Callable[[Any], base.T], arg: Any, *, gpus: float, what: str,
             say: Callable[[str], None]) -> base.T:
        return fn(arg)


def _interrupt(procs: list[Any]) -> None:
    """SIGINT to every live worker (a terminal sends it too; a test does not), then wait."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGINT)
    for proc in procs:
        proc.join(timeout=base.INTERRUPT_WAIT_S)
        if proc.is_alive():
            proc.terminate()
