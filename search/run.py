"""`search run`: create or continue a study and run its workers until it is done."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import optuna

from search import record, stopping
from search.args import UsageError
from search.live import LiveView
from search.storage import RUNS_DIR, StartLock, mask_url, open_storage, resolve_storage_url
from search.worker import WorkerConfig
from trainers.locate import find_data

if TYPE_CHECKING:
    from space import StudySpec
    from trainers.protocol import Trainer

# Study attributes: the space a study was started with (`StudySpec.fingerprint`), and
# the study file it came from, for the message when another space comes along.
SPACE_FINGERPRINT = "space_fingerprint"
SPACE_SOURCE = "space_source"
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report 128 + SIGINT
EXIT_TERMINATED = 143  # SIGTERM, as shells report 128 + SIGTERM


CPU_STUDY = "cpu-small"  # the built-in study sized for a CPU


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
    trainer: Trainer | None = None  # None: trainers.fit; tests and benchmarks pass stubs
    log_dir: str | None = None  # tracebacks of bugs; default runs/<study>/logs
    allow_space_change: bool = False  # run although the study began with another space
    warm_start: tuple[str, int] | None = None  # (study in the same store, its top K) to queue
    tensorboard: str | None = None  # event files per trial under <this>/<study>/trial-N


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that it stops the workers as Ctrl-C does."""


# Set by SIGTERM: the interrupt that reaches `run_search` may not be the `Terminated`
# raised (Ray's wait, for one, turns what interrupts it into a KeyboardInterrupt).
_SIGTERM = threading.Event()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM raises `Terminated` (only the main thread can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: Any) -> None:
        _SIGTERM.set()
        raise Terminated

    _SIGTERM.clear()
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_fits(spec: StudySpec) -> None:
    """Refuse a space in which no architecture fits the budget: its every trial would be
    pruned, and the search would end "successfully" with nothing trained."""
    from models import count_params
    from space import SpecError
    from space.smallest import fitting_draw, smallest_arch

    arch, n_params = smallest_arch(spec.sample_arch, count_params)
    if n_params > spec.budget and not fitting_draw(spec.sample_arch, count_params,
                                                   spec.budget):
        raise SpecError(f"{spec.source}: study.budget: no architecture of the space fits in "
                        f"{spec.budget:,} parameters; the smallest, {arch.describe()}, has "
                        f"{int(n_params):,}: raise the budget or allow smaller networks")


def say_cpu_cost(spec: StudySpec, study: optuna.Study, n_train: int, out: TextIO) -> None:
    """On a machine without a GPU (where the trials will train on its CPU): what one
    trial costs, from a timed step of the first candidate."""
    import torch

    if torch.cuda.is_available():
        return
    from search.estimate import trial_cost

    cost = trial_cost(spec, study, n_train)
    if cost is not None:
        print(f"cost     {cost.describe(CPU_STUDY)}", file=out, flush=True)


def describe_study(study: optuna.Study, spec: StudySpec, data_source: str) -> None:
    from search.dashboard import describe_study as describe

    describe(study, spec, data_source)


def check_space(study: optuna.Study, spec: StudySpec, allow_change: bool, out: TextIO) -> None:
    """Give a new study (or one from before fingerprints) the space's fingerprint; refuse
    another space unless ``allow_change``, which then makes the new space the study's."""
    from space.spec import LEGACY_MEMORY_BATCH

    mine = spec.fingerprint()
    attrs = study.user_attrs
    theirs = attrs.get(SPACE_FINGERPRINT)
    if theirs == mine:
        return
    if theirs is not None and theirs == spec.fingerprint(legacy_memory_batch=True):
        # The same file, from a release that measured memory at 512 images: carry on.
        print(f"space    memory budget now measured at the recipe's batch size, "
              f"{spec.memory_images} images; this study's earlier trials were measured at "
              f"{LEGACY_MEMORY_BATCH}", file=out)
    elif theirs is not None:
        source = attrs.get(SPACE_SOURCE, "an unrecorded study file")
        if not allow_change:
            raise UsageError(
                f"study {study.study_name!r} was started with another space or budget "
                f"(fingerprint {theirs}, from {source}) than {spec.source} (fingerprint "
                f"{mine}): give this space its own --study-name, or pass "
                "--allow-space-change to add its trials to the same study")
        print(f"space    changed: {theirs} ({source}) -> {mine} ({spec.source}); this study's "
              "trials now mix both spaces", file=out)
    study.set_user_attr(SPACE_FINGERPRINT, mine)
    study.set_user_attr(SPACE_SOURCE, spec.source)


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
        study.enqueue_trial(params, user_attrs={record.BASELINE: name})
        queued.append(name)
    if queued:
        print(f"baselines queued first: {', '.join(queued)}", file=out)
    return queued


WARM_START = "warm_start"  # user attribute: "<study>#<trial>" a queued trial came from


def enqueue_warm_start(study: optuna.Study, spec: object, storage: Any, other: str, k: int,
                       out: TextIO) -> list[int]:
    """Queue the top ``k`` complete trials of study ``other`` (same store) whose
    architecture and recipe fit this space and budget; the trial numbers queued.

    Raises:
        UsageError: there is no study ``other`` in the store.
    """
    import json

    from models import ArchConfig, ConfigError, count_params
    from space import StudySpec

    assert isinstance(spec, StudySpec)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if other not in names:
        raise UsageError(f"--warm-start {other}: no such study in this store (studies: "
                         f"{', '.join(sorted(names)) or 'none'})")
    source = optuna.load_study(study_name=other, storage=storage)
    queued, skipped = [], []
    for trial in record.best(source.get_trials(deepcopy=False), k):
        fixed = optuna.trial.FixedTrial(dict(trial.params))
        try:
            arch = spec.sample_arch(fixed)
            spec.arch_params(arch)  # inside this space, not only buildable from it
            spec.sample_train(fixed)
            trained = record.stored_config(trial, record.ARCH)  # what the trial trained
            same = trained is None or ArchConfig.from_dict(json.loads(trained)) == arch
        except (ValueError, ConfigError):
            same = False
        if not same or count_params(arch) > spec.budget:
            skipped.append(trial.number)
            continue
        study.enqueue_trial(dict(trial.params), user_attrs={WARM_START: f"{other}#{trial.number}"},
                            skip_if_exists=True)
        queued.append(trial.number)
    print(f"warm     queued {len(queued)} of {other}'s best trials"
          f"{' (' + ', '.join(map(str, queued)) + ')' if queued else ''}"
          f"{f'; {len(skipped)} do not fit this space or budget' if skipped else ''}", file=out)
    return queued


def run_search(opts: RunOptions, out: TextIO = sys.stdout) -> int:
    """Run the study to ``opts.n_trials`` finished trials; the exit code.

    SIGTERM stops it as Ctrl-C does: the workers stop, their running trials are
    FAIL, and the exit code is 143 (Ctrl-C: 130).
    """
    with sigterm_as_interrupt():
        try:
            return _run_search(opts, out)
        except KeyboardInterrupt:  # before or after the workers ran
            if not _SIGTERM.is_set():
                raise
            print("search: terminated", file=sys.stderr)
            return EXIT_TERMINATED


def _run_search(opts: RunOptions, out: TextIO) -> int:
    from search.executors import WorkerError, make_executor
    from space import load_spec
    from trainers import load_cifar10

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view says what matters
    spec = load_spec(opts.study)
    check_fits(spec)
    if opts.n_trials is None:
        opts = dataclasses.replace(opts, n_trials=spec.n_trials)
    assert opts.n_trials is not None
    name = opts.study_name or spec.name
    url = resolve_storage_url(opts.storage, name)
    data_path = find_data(opts.data)
    print(f"study    {name} ({spec.source}), budget {spec.limits.describe()}", file=out)
    print(f"store    {mask_url(url)}", file=out)
    # Decode the data once here, so that the workers all read the cache.
    data = load_cifar10(data_path, progress=lambda m: print(f"data     {m}", file=out, flush=True))
    print(f"data     {data.source}: {len(data.train_labels):,} train images", file=out)

    storage = open_storage(url, heartbeat=False)
    # Under the start lock: two commands starting the same new study at once must not
    # both queue the baselines, nor both set the space's fingerprint.
    lock = StartLock(url, name)
    lock.acquire()
    try:
        try:
            study = optuna.create_study(study_name=name, storage=storage,
                                        directions=record.directions(spec.objectives),
                                        load_if_exists=True)
        except ValueError as err:  # an existing study of other objectives
            raise UsageError(f"study {name!r}: {err}; give this study file its own "
                             "--study-name") from None
        if len(study.directions) != len(spec.objectives):
            raise UsageError(f"study {name!r} has {len(study.directions)} objective(s) and "
                             f"{spec.source} asks for {len(spec.objectives)} "
                             f"({', '.join(spec.objectives)}); give it its own --study-name")
        if not study.metric_names:  # what the dashboard calls the values
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.metric for o in record.objectives(spec.objectives)])
        check_space(study, spec, opts.allow_space_change, out)
        describe_study(study, spec, data.source)
        if not study.trials and opts.baselines:
            enqueue_baselines(study, spec, out)
        if opts.warm_start is not None:
            enqueue_warm_start(study, spec, storage, *opts.warm_start, out)
    finally:
        lock.release()
    done, _ = record.count_finished(study.get_trials(deepcopy=False))
    if done >= opts.n_trials:
        print(f"trials   {done} of {opts.n_trials} finished already", file=out)
        return 0
    log_dir = Path(opts.log_dir) if opts.log_dir else RUNS_DIR / name / "logs"
    if opts.trainer is None and opts.device != "cuda" and not opts.ray_address:
        say_cpu_cost(spec, study, len(data.train_labels), out)
    view = LiveView(study, opts.n_trials, out)
    code = 0
    try:
        with make_executor(opts.executor, opts.ray_address) as executor:
            place = executor.placement(opts.workers, opts.gpus_per_trial, opts.device,
                                       trials_left=opts.n_trials - done)
            if place.reduced:
                print(place.reduced, file=out)
            configs = [WorkerConfig(study=opts.study, study_name=name, storage_url=url,
                                    n_trials=opts.n_trials, data=data_path, device=opts.device,
                                    seed=opts.seed, worker=i, timeout=opts.timeout,
                                    trainer=opts.trainer, cpu_threads=place.cpu_threads,
                                    gpus=place.gpus_per_worker, cpus=place.cpus_per_worker,
                                    log_dir=str(log_dir.resolve()),
                                    tensorboard=str(Path(opts.tensorboard).resolve())
                                    if opts.tensorboard else None)
                       for i in range(place.workers)]
            print(f"trials   {done} of {opts.n_trials} finished already; {place.describe()}",
                  file=out, flush=True)
            view.workers = place.workers
            try:
                executor.run_workers(configs, view.update)
            finally:
                view.close()
    except KeyboardInterrupt:
        terminated = _SIGTERM.is_set()  # Terminated itself, or what it became
        stop = "terminated" if terminated else "interrupted"
        print(f"{stop}: workers stopped; run the same command to continue", file=out)
        code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except WorkerError as err:
        print(f"search: a worker failed: {err} (tracebacks of errors in the code: {log_dir}/ "
              "and the workers' stderr)", file=sys.stderr)
        code = 1
    summarize(study, out)
    return code


def summarize(study: optuna.Study, out: TextIO) -> None:
    trials = study.get_trials(deepcopy=False)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    print("states   " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(by_state.items())),
          file=out)
    best = record.best(trials, 1)
    if best:
        n_params = record.int_attr(best[0], record.N_PARAMS) or 0
        print(f"best     trial {best[0].number}: {record.OBJECTIVE.metric} "
              f"{record.value(best[0]):.4f}, {n_params:,} parameters, "
              f"{record.str_attr(best[0], record.ARCH_SUMMARY) or ''}", file=out)
    if len(study.directions) == 1:
        for line in stopping.lines(trials):
            print(line, file=out)
