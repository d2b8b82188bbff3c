"""`search promote`: a trial of the search, trained in full, with its numbers and pictures.

The trial's parameters come from the store and are turned back into its
architecture and recipe by the study file's space; the study file's ``[final]``
table turns the recipe into the full one (200 epochs). Training checkpoints every
epoch into ``runs/<study>/trial-<N>/``, so the same command after a crash resumes.
At the end the run folder holds::

    config.json     both configs, seed, code version, data source, trial, store
    checkpoint.pt   the last training checkpoint (resumable)
    model.pt        the evaluated weights (EMA if on), a bare state_dict
    metrics.csv     one row per epoch (rewritten after every epoch)
    curves.png      loss and accuracy against epochs
    confusion.png   the test set's confusion matrix
    summary.json    test accuracy overall and per class, size, time, device

(file names, writers and readers: `trainers.rundir`) and the trial in the store
gets ``promoted_test_acc`` and ``promoted_run_dir`` (`search.record.promoted_attrs`).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from search import record
from search.args import os_reason
from search.results.ensemble import teacher_scores, teachers_for_run, validation_leak
from search.results.trial_configs import PromoteError, final_recipe, find_trial, trial_configs
from search.storage import RUNS_DIR, mask_url
from trainers import rundir
from trainers.rundir import CHECKPOINT_EVERY, CHECKPOINT_MINUTES


@dataclass(frozen=True)
class PromoteOptions:
    trial: int
    study: str  # built-in study name or study file
    storage: str | None = None
    study_name: str | None = None  # name in the store; default: the study file's
    epochs: int | None = None  # default: the study file's [final] epochs
    data: str | None = None
    device: str | None = None  # default: CUDA if present
    ray_address: str | None = None  # train as a Ray task on this cluster ("local": start one)
    restart: bool = False  # discard the run folder's checkpoints first
    out: str | None = None  # run folder; default runs/<study>/trial-<N>
    teachers: tuple[str, ...] = ()  # run folders to distil (`trainers.distill`)
    teacher_weights: str | None = None  # "2,1": each teacher's weight; default equal
    teacher_cache: bool = False  # the teachers' outputs once, for the un-augmented images
    fold: str | None = None  # "k/K": train without fold k of K, validate on it
    kd_alpha: float | None = None  # default: the [final] recipe's
    kd_temperature: float | None = None
    compile: bool | None = None  # torch.compile the training step; None: on CUDA only
    checkpoint_every: int = CHECKPOINT_EVERY  # epochs between checkpoints, at most
    checkpoint_minutes: float = CHECKPOINT_MINUTES  # minutes between checkpoints, at most
    tensorboard: str | None = None  # event files under <this>/<study>/final-<run folder>
    artifacts: str | None = None  # artifact store (folder or URL); default: the study's


@dataclass(frozen=True)
class PromoteJob:
    """What the training side needs: plain values, so that it can travel to a Ray task."""

    arch: dict[str, Any]
    train: dict[str, Any]
    data: str
    run_dir: str
    device: str | None
    study: str
    trial: int
    storage: str  # masked
    tty: bool
    budget: int = 0  # the study's parameter budget, recorded in config.json
    teachers: tuple[str, ...] = ()
    teacher_weights: str | None = None
    teacher_cache: bool = False
    compile: bool | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_minutes: float = CHECKPOINT_MINUTES
    tensorboard: str | None = None


def promote(opts: PromoteOptions, out: TextIO = sys.stdout) -> int:
    """Train trial ``opts.trial`` with the full recipe; the exit code."""
    promote_run(opts, out)
    return 0


def promote_run(opts: PromoteOptions, out: TextIO = sys.stdout) -> Path:
    """Train trial ``opts.trial`` with the full recipe; its run folder."""
    from search.storage import load_study, resolve_storage_url, set_finished_trial_attrs
    from space import load_spec
    from trainers.locate import find_data

    spec = load_spec(opts.study)
    name = opts.study_name or spec.name
    url = resolve_storage_url(opts.storage, name, create=False)
    study = load_study(url, name)
    trial = find_trial(study, opts.trial)
    arch, train, notes = trial_configs(spec, trial)
    final = final_recipe(spec, train, opts.epochs, fold=opts.fold, kd_alpha=opts.kd_alpha,
                         kd_temperature=opts.kd_temperature)
    if opts.artifacts:  # a store that cannot work is refused before hours of training
        from search.dashboard import ArtifactStoreError, open_artifact_store

        try:
            open_artifact_store(opts.artifacts)
        except ArtifactStoreError as err:
            raise PromoteError(f"--artifacts: {err}") from None
    if opts.teacher_cache and not opts.teachers:
        raise PromoteError("--teacher-cache: there is no --teacher to cache")
    if opts.teacher_cache and (final.mixup or final.cutmix or final.ricap):
        raise PromoteError("--teacher-cache: the recipe mixes images (mixup, CutMix or RICAP), "
                           "and cached teacher outputs are of whole images; drop the option "
                           "to run the teachers on every batch")
    run_dir = Path(opts.out) if opts.out else rundir.trial_dir(
        RUNS_DIR, name, trial.number, final.fold_numbers(), distilled=bool(opts.teachers))
    data = find_data(opts.data, recorded=record.str_attr(trial, record.DATA_SOURCE))
    for note in notes:
        print(f"note     {note}", file=out)
    value = record.value(trial)
    print(f"trial    {trial.number} of study {name}: {record.OBJECTIVE.metric} "
          f"{'-' if value is None else f'{value:.4f}'} after {train.epochs} epochs, "
          f"{record.int_attr(trial, record.N_PARAMS) or 0:,} parameters", file=out)
    print(f"arch     {arch.describe()}", file=out)
    print(f"recipe   {final.epochs} epochs, {final.optimizer} lr {final.lr:g}, batch "
          f"{final.batch_size}, {'all' if not final.train_subset else final.train_subset} "
          f"training images{'' if final.val_size or final.fold else ', no validation split'}"
          f"{f', fold {final.fold} held out' if final.fold else ''}", file=out)
    if opts.teachers:
        print(f"teachers {len(opts.teachers)} run(s), alpha {final.kd_alpha:g}, temperature "
              f"{final.kd_temperature:g}{', outputs cached' if opts.teacher_cache else ''}",
              file=out)
    print(f"output   {run_dir}", file=out, flush=True)
    job = PromoteJob(arch=arch.to_dict(), train=final.to_dict(), data=data,
                     run_dir=str(run_dir.resolve()), device=opts.device, study=name,
                     trial=trial.number, storage=mask_url(url), tty=out.isatty(),
                     budget=spec.budget, teachers=tuple(opts.teachers),
                     teacher_weights=opts.teacher_weights, teacher_cache=opts.teacher_cache,
                     compile=opts.compile, checkpoint_every=opts.checkpoint_every,
                     checkpoint_minutes=opts.checkpoint_minutes,
                     tensorboard=str(Path(opts.tensorboard).resolve())
                     if opts.tensorboard else None)
    try:
        # One promote per run folder: a second one would train beside it and both
        # would overwrite each other's checkpoints and outputs.
        with rundir.locked(run_dir, f"promote of trial {trial.number}"):
            if opts.restart and (removed := rundir.discard(run_dir)):
                print(f"restart  removed {', '.join(removed)}", file=out)
            if opts.ray_address:
                summary, files = _on_ray(job, opts.ray_address, out)
                rundir.write_outputs(run_dir, files)
            else:
                summary = train_and_write(job, out)
            set_finished_trial_attrs(url, name, trial.number,
                                     record.promoted_attrs(summary, str(run_dir.resolve())))
    except rundir.RunFolderLocked as err:
        raise PromoteError(f"{err}; wait for it to finish, or stop it") from None
    except (OSError, RuntimeError) as err:
        if (cause := os_error(err)) is None:
            raise
        raise PromoteError(write_failure(run_dir, cause)) from None
    print(f"test     accuracy {100 * summary['test_acc']:.2f}% on "
          f"{summary['test_images']:,} test images; written to the trial as "
          f"{record.PROMOTED_TEST_ACC}", file=out)
    attach_run_files(url, name, trial.number, run_dir, opts.artifacts, out)
    print(f"done     {run_dir}/: {', '.join(rundir.OUTPUTS)}", file=out)
    return run_dir


def attach_run_files(url: str, name: str, number: int, run_dir: Path, given: str | None,
                     out: TextIO) -> None:
    """The run's curves, confusion matrix, summary and metrics into the study's artifact
    store, listed on the trial (the dashboard shows them); a failure only warns, since
    the run itself is done and on disk."""
    from search.dashboard import RUN_FILES, ArtifactStoreError, upload_to_finished_trial

    paths = [run_dir / f for f in RUN_FILES if (run_dir / f).is_file()]
    try:
        location, metas = upload_to_finished_trial(url, name, number, paths, given)
    except (ArtifactStoreError, OSError) as err:
        print(f"search: warning: the run's files were not attached to trial {number}: {err}",
              file=sys.stderr)
        return
    print(f"attached {', '.join(m['filename'] for m in metas)} to trial {number} "
          f"(artifact store {location})", file=out)


def os_error(err: BaseException) -> OSError | None:
    """The file system's OSError behind ``err`` (torch.save, for one, turns a full disk
    into a RuntimeError); None for others, such as a closed pipe or a lost connection."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return None if isinstance(seen, (ConnectionError, TimeoutError)) else seen


def write_failure(run_dir: Path, err: OSError) -> str:
    """One line for a failed write: the folder (or the file outside it), and why."""
    why = os_reason(err)
    hint = "free some space" if err.errno == errno.ENOSPC else "fix it"
    hint = f"; {hint} and run the same command to resume from the last checkpoint"
    if err.filename and not Path(str(err.filename)).resolve().is_relative_to(run_dir.resolve()):
        return f"{err.filename}: {why}{hint}"
    return f"{run_dir}: cannot write the run folder: {why}{hint}"


def train_and_write(job: PromoteJob, out: TextIO) -> dict[str, Any]:
    """Train (or resume) the run and write every output file; the summary.

    Runs in the calling process or inside a Ray task (which then sends the files
    back, see `_on_ray`).
    """
    import torch

    from models import ArchConfig, count_flops
    from search.results.plots import plot_confusion, plot_curves
    from search.results.progress import EpochProgress
    from trainers import TrainConfig, fit, load_cifar10
    from trainers.checkpoint import CheckpointError, code_version, load_latest
    from trainers.distill import TeacherCacheError
    from trainers.inference import class_report, predict_logits, save_model
    from trainers.training import check_same_run, resolve_device

    arch, cfg = ArchConfig.from_dict(job.arch), TrainConfig.from_dict(job.train)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # metrics.csv is rewritten after every epoch; a resumed run starts from the
    # checkpoint's history. A checkpoint of another run is refused before anything
    # of that run is overwritten.
    try:
        previous = load_latest(run_dir, lambda _: None)
        if previous is not None:
            check_same_run(previous, arch, cfg, run_dir)
    except CheckpointError as err:
        raise PromoteError(f"{err}; pass --restart to discard it and train from scratch") \
            from None
    rows: list[dict[str, float]] = list(previous["history"]) if previous else []
    if previous is not None:  # the epochs a crash lost after the checkpoint: trained again
        rundir.write_metrics(run_dir, rows)
    if previous is not None and previous["epoch"] >= cfg.epochs:
        print(f"note     the checkpoint is of the last epoch ({cfg.epochs}): nothing left to "
              "train, only the outputs are written again (--restart trains anew)", file=out)
    data = load_cifar10(job.data, progress=lambda m: print(f"data     {m}", file=out, flush=True))
    device = resolve_device(job.device)
    teacher, teachers, weights = teachers_for_run(
        job.teachers, job.teacher_weights, job.teacher_cache, data.digest, device, run_dir,
        resuming=previous is not None)
    if (leak := validation_leak(teachers, cfg)) is not None:
        print(f"note     {leak}", file=out)
    rundir.write_config(run_dir, {
        "study": job.study, "trial": job.trial, "storage": job.storage,
        "arch": arch.to_dict(), "train": cfg.to_dict(), "seed": cfg.seed,
        "code_version": code_version(), "data_source": data.source,
        "data_digest": data.digest, "device": str(device), "torch": torch.__version__,
        "budget": job.budget, "fold": cfg.fold or None,
        "teachers": [{**m.describe(), "weight": w} for m, w in zip(teachers, weights,
                                                                    strict=True)],
    })
    progress = EpochProgress(cfg.epochs, out, tty=job.tty)
    board = None
    if job.tensorboard:
        from search.tensorboard import Board

        board = Board(job.tensorboard, job.study, f"final-{run_dir.name}")

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        progress.epoch(metrics)
        if board is not None:
            board.epoch(epoch, metrics)
        rows[:] = [row for row in rows if row["epoch"] < epoch] + [metrics]
        rundir.write_metrics(run_dir, rows)
        return False

    def say(message: str) -> None:
        progress.close()
        print(f"resume   {message}" if "resum" in message else f"note     {message}",
              file=out, flush=True)

    started = time.perf_counter()
    try:
        # Deterministic kernels on the CPU make a resumed run end exactly as an
        # uninterrupted one; CUDA's would cost speed, so there it is only close.
        result = fit(arch, cfg, data, device=device, report=report,
                     checkpoint_dir=run_dir, checkpoint_every=job.checkpoint_every,
                     checkpoint_seconds=60.0 * job.checkpoint_minutes,
                     deterministic=device.type == "cpu", log=say, on_step=progress.step,
                     teacher=teacher,
                     compile=device.type == "cuda" if job.compile is None else job.compile)
    except (CheckpointError, TeacherCacheError) as err:
        progress.close()
        raise PromoteError(f"{err}; pass --restart to discard it and train from scratch") \
            from None
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: the last checkpoint in {run_dir} is kept; run the same command "
              "to resume", file=out, flush=True)
        raise
    progress.close()
    rundir.write_metrics(run_dir, result.history)
    save_model(result.model, run_dir / rundir.MODEL)
    logits = predict_logits(result.model, data.test_images, tta_flip=cfg.tta_flip,
                            tta_translate=cfg.tta_translate, device=device)
    classes = class_report(data.test_labels, logits.argmax(1), data.classes)
    title = f"{job.study} trial {job.trial}: {arch.describe()}"
    plot_curves(result.history, run_dir / rundir.CURVES, title=title)
    plot_confusion(classes.confusion, data.classes, run_dir / rundir.CONFUSION,
                   title=f"{job.study} trial {job.trial}: test accuracy "
                         f"{100 * classes.accuracy:.2f}%")
    train_seconds = sum(row["seconds"] for row in result.history)
    summary = {
        "study": job.study, "trial": job.trial,
        "test_acc": classes.accuracy, "test_images": len(data.test_labels),
        "per_class_acc": classes.per_class, "confusion": classes.confusion.tolist(),
        "classes": list(data.classes),
        "val_acc": _number(result.val_acc), "best_val_acc": _number(result.best_val_acc),
        "validation": validation_note(cfg.val_size, cfg.train_subset,
                                      len(data.train_labels)),
        "epochs": result.epochs, "resumed_from": result.resumed_from,
        "n_params": result.n_params, "flops": count_flops(arch),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(result.history)),
        "wall_seconds_this_command": time.perf_counter() - started,
        "device": result.device, "tta_flip": cfg.tta_flip, "code_version": code_version(),
        "fold": cfg.fold or None,
    }
    if teachers:
        summary["distillation"] = {"alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature,
                                   "cached": job.teacher_cache}
        summary.update(teacher_scores(teachers, weights, data.test_images, data.test_labels))
    rundir.write_summary(run_dir, summary)
    if board is not None:
        from search.tensorboard import flat

        board.close({**flat(arch.to_dict(), "arch."), **flat(cfg.to_dict(), "train."),
                     "n_params": result.n_params},
                    {"test_acc": classes.accuracy, "val_acc": _number(result.val_acc),
                     "epochs": float(result.epochs)})
    return summary


def _on_ray(job: PromoteJob, address: str, out: TextIO) -> tuple[dict[str, Any],
                                                                  dict[str, bytes]]:
    """`train_and_write` as one task of the ``ray`` executor (one GPU when the cluster has
    one) on the cluster at ``address`` ("local": start one here); its summary and files.

    The task checkpoints into the same path on the node that runs it; to resume there
    after a crash, ``runs/`` should be a folder every node shares.
    """
    from search.executors import make_executor

    with make_executor("ray", address) as executor:
        result: tuple[dict[str, Any], dict[str, bytes]] = executor.call(
            _ray_task, dataclasses.replace(job, tty=False), gpus=1.0,
            what=f"trial {job.trial}", say=lambda m: print(f"ray      {m}", file=out, flush=True))
    return result


def _ray_task(job: PromoteJob) -> tuple[dict[str, Any], dict[str, bytes]]:
    summary = train_and_write(job, sys.stdout)
    return summary, rundir.read_outputs(Path(job.run_dir))


def validation_note(val_size: int, train_subset: int, n_train: int) -> str:
    """What summary.json says of the validation split, with the images trained on.

    Args:
        val_size: images held out for validation; 0 = none.
        train_subset: training images used (stratified); 0 = all that are not held out.
        n_train: images in the data set's training split.
    """
    used = n_train - val_size
    if train_subset:
        used = min(used, train_subset)
    if not val_size:
        scope = "all" if used == n_train else f"{used:,} of the"
        return f"none: val_size = 0, trained on {scope} {n_train:,} training images"
    return (f"{val_size:,} of the {n_train:,} training images held out, trained on "
            f"{used:,}")


def _number(value: float) -> float | None:
    """JSON has no NaN: a metric that does not exist (no validation split) is null."""
    return None if math.isnan(value) else value
