"""`search run`: create or continue a study and run its workers until it is done."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna

from search.live import LiveView
from search.storage import StartLock, mask_url, open_storage, resolve_storage_url
from search.worker import TRAINER, WorkerConfig, count_finished

DATA_ENV = "SEARCH_DATA"
# Looked for, in this order, when neither --data nor $SEARCH_DATA is given.
DATA_CANDIDATES = ("data/cifar-10-python.tar.gz", "data/cifar-10-batches-py",
                   "data/cifar10-jpeg.tar.gz", "data/cifar10")


class RunError(ValueError):
    """Bad input to `search run` (printed as one line, exit code 2)."""


@dataclass(frozen=True)
class RunOptions:
    study: str
    storage: str | None = None
    study_name: str | None = None
    n_trials: int | None = None  # None: the study file's
    timeout: float | None = None
    workers: int | None = None
    gpus_per_trial: float = 1.0
    executor: str = "ray"
    ray_address: str | None = None
    data: str | None = None
    device: str | None = None
    seed: int | None = None
    baselines: bool = True
    trainer: str = TRAINER


def find_data(given: str | None) -> str:
    """--data, else $SEARCH_DATA, else the first of `DATA_CANDIDATES` that exists."""
    if given:
        return given
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    for candidate in DATA_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise RunError(f"no data: pass --data PATH, set ${DATA_ENV}, or put the data at one of "
                   f"{', '.join(DATA_CANDIDATES)}")


def enqueue_baselines(study: optuna.Study, spec: object, out: TextIO) -> list[str]:
    """Queue the named baselines inside the space as the study's first trials."""
    from models import BASELINES, count_params
    from space import StudySpec

    assert isinstance(spec, StudySpec)
    queued = []
    for name, arch in BASELINES.items():
        if count_params(arch) > spec.budget:
            continue
        try:
            params = spec.arch_params(arch)
        except ValueError:
            continue
        study.enqueue_trial(params, user_attrs={"baseline": name})
        queued.append(name)
    if queued:
        print(f"baselines queued first: {', '.join(queued)}", file=out)
    return queued


@dataclass(frozen=True)
class Placement:
    """How many workers run, and what each holds."""

    workers: int
    gpus_per_worker: float  # 0: the workers train on CPUs
    cpus_per_worker: float  # Ray's CPU resource per worker (fractions allowed)
    cpu_threads: int | None  # torch threads per worker; None: torch's default
    where: str  # "this machine", "Ray cluster at ..."

    def describe(self) -> str:
        held = (f"{self.gpus_per_worker:g} GPU each" if self.gpus_per_worker
                else f"CPU, {self.cpu_threads} thread(s) each")
        return f"{self.workers} worker(s) on {self.where}, {held}"


def local_placement(opts: RunOptions) -> Placement:
    """Workers on this machine: one per local GPU, else one (or --workers) sharing the cores."""
    import torch

    gpus = torch.cuda.device_count() if opts.device != "cpu" and torch.cuda.is_available() else 0
    workers = opts.workers or max(1, gpus)
    cpus = os.cpu_count() or 1
    return Placement(workers, 1.0 if gpus else 0.0, 0.0 if gpus else cpus / workers,
                     None if gpus else max(1, cpus // workers), "this machine")


def ray_placement(opts: RunOptions) -> Placement:
    """Workers on the Ray cluster joined: sized from the cluster's GPUs and CPUs, not
    from the machine this command runs on (which may hold neither)."""
    import ray

    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0.0)) if opts.device != "cpu" else 0.0
    where = f"Ray cluster at {opts.ray_address}" if opts.ray_address else "a local Ray instance"
    if gpus:
        workers = opts.workers or max(1, int(gpus // opts.gpus_per_trial))
        return Placement(workers, opts.gpus_per_trial, 0.0, None, where)
    workers = opts.workers or 1
    # A CPU share that fits on one node, so that K workers on fewer cores all run at once.
    node_cpus = max((float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n["Alive"]),
                    default=0.0)
    if node_cpus <= 0:
        raise RunError(f"the {where} has neither GPUs nor CPUs to run workers on")
    share = min(float(total.get("CPU", 0.0)) / workers, node_cpus)
    return Placement(workers, 0.0, share, max(1, int(share)), where)


def run_search(opts: RunOptions, out: TextIO = sys.stdout) -> int:
    """Run the study to ``opts.n_trials`` finished trials; the exit code."""
    from search.executors import WorkerError, init_ray, run_local, run_ray
    from space import load_spec
    from trainers import load_cifar10

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view says what matters
    spec = load_spec(opts.study)
    if opts.n_trials is None:
        opts = dataclasses.replace(opts, n_trials=spec.n_trials)
    assert opts.n_trials is not None
    name = opts.study_name or spec.name
    url = resolve_storage_url(opts.storage, name)
    data_path = find_data(opts.data)
    print(f"study    {name} ({spec.source}), budget {spec.budget:,} parameters", file=out)
    print(f"store    {mask_url(url)}", file=out)
    # Decode the data once here, so that the workers all read the cache.
    data = load_cifar10(data_path, progress=lambda m: print(f"data     {m}", file=out, flush=True))
    print(f"data     {data.source}: {len(data.train_labels):,} train images", file=out)

    storage = open_storage(url, heartbeat=False)
    # Under the start lock: two commands starting the same new study at once must not
    # both queue the baselines.
    lock = StartLock(url, name)
    lock.acquire()
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    load_if_exists=True)
        if not study.trials and opts.baselines:
            enqueue_baselines(study, spec, out)
    finally:
        lock.release()
    done, _ = count_finished(study)
    if done >= opts.n_trials:
        print(f"trials   {done} of {opts.n_trials} finished already", file=out)
        return 0
    view = LiveView(study, opts.n_trials, out)
    code = 0
    started_ray = False
    try:
        if opts.executor == "local":
            place = local_placement(opts)
        else:
            started_ray = init_ray(opts.ray_address)
            place = ray_placement(opts)
        configs = [WorkerConfig(study=opts.study, study_name=name, storage_url=url,
                                n_trials=opts.n_trials, data=data_path, device=opts.device,
                                seed=opts.seed, worker=i, timeout=opts.timeout,
                                trainer=opts.trainer, cpu_threads=place.cpu_threads)
                   for i in range(place.workers)]
        print(f"trials   {done} of {opts.n_trials} finished already; {place.describe()}",
              file=out, flush=True)
        if opts.executor == "local":
            run_local(configs, view.update)
        else:
            run_ray(configs, view.update, gpus_per_trial=place.gpus_per_worker,
                    cpus_per_trial=place.cpus_per_worker)
    except KeyboardInterrupt:
        print("interrupted: workers stopped; run the same command to continue", file=out)
        code = 130
    except WorkerError as err:
        print(f"search: a worker failed: {err}", file=sys.stderr)
        code = 1
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    summarize(study, out)
    return code


def summarize(study: optuna.Study, out: TextIO) -> None:
    trials = study.get_trials(deepcopy=False)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    print("states   " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(by_state.items())),
          file=out)
    complete = [t for t in trials if t.value is not None]
    if complete:
        best = max(complete, key=lambda t: t.value or 0.0)
        print(f"best     trial {best.number}: val_acc {best.value:.4f}, "
              f"{best.user_attrs.get('n_params', 0):,} parameters, "
              f"{best.user_attrs.get('arch_summary', '')}", file=out)
