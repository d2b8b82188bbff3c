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

and the trial in the store gets ``promoted_test_acc`` and ``promoted_run_dir``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna

from search.storage import RUNS_DIR, mask_url

OUTPUTS = ("config.json", "model.pt", "metrics.csv", "curves.png", "confusion.png",
           "summary.json")
CHECKPOINTS = ("checkpoint.pt", "checkpoint.prev.pt")
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                  "images_per_s")


class PromoteError(ValueError):
    """Bad input to `search promote` (printed as one line, exit code 2)."""


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


def promote(opts: PromoteOptions, out: TextIO = sys.stdout) -> int:
    """Train trial ``opts.trial`` with the full recipe; the exit code."""
    from search.run import DATA_ENV, find_data
    from search.storage import load_study, resolve_storage_url, set_finished_trial_attrs
    from space import load_spec

    spec = load_spec(opts.study)
    name = opts.study_name or spec.name
    url = resolve_storage_url(opts.storage, name, create=False)
    study = load_study(url, name)
    trial = find_trial(study, opts.trial)
    arch, train, notes = trial_configs(spec, trial)
    final = final_recipe(spec, train, opts.epochs)
    run_dir = Path(opts.out) if opts.out else RUNS_DIR / name / f"trial-{trial.number}"
    recorded = trial.user_attrs.get("data_source")  # what the trial itself was trained on
    data = find_data(opts.data or (recorded if isinstance(recorded, str) and not
                                   os.environ.get(DATA_ENV) and Path(recorded).exists()
                                   else None))
    for note in notes:
        print(f"note     {note}", file=out)
    print(f"trial    {trial.number} of study {name}: val_acc {trial.value:.4f} after "
          f"{train.epochs} epochs, {trial.user_attrs.get('n_params', 0):,} parameters", file=out)
    print(f"arch     {arch.describe()}", file=out)
    print(f"recipe   {final.epochs} epochs, {final.optimizer} lr {final.lr:g}, batch "
          f"{final.batch_size}, {'all' if not final.train_subset else final.train_subset} "
          f"training images", file=out)
    print(f"output   {run_dir}", file=out, flush=True)
    if opts.restart:
        discard(run_dir, out)
    job = PromoteJob(arch=arch.to_dict(), train=final.to_dict(), data=data,
                     run_dir=str(run_dir.resolve()), device=opts.device, study=name,
                     trial=trial.number, storage=mask_url(url), tty=out.isatty())
    if opts.ray_address:
        summary = _on_ray(job, opts.ray_address, run_dir, out)
    else:
        summary = train_and_write(job, out)
    set_finished_trial_attrs(url, name, trial.number, {
        "promoted_test_acc": round(summary["test_acc"], 4),
        "promoted_run_dir": str(run_dir.resolve()),
        "promoted_epochs": summary["epochs"],
    })
    print(f"test     accuracy {100 * summary['test_acc']:.2f}% on "
          f"{summary['test_images']:,} test images; written to the trial as "
          "promoted_test_acc", file=out)
    print(f"done     {run_dir}/: {', '.join(OUTPUTS)}", file=out)
    return 0


def find_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number``, which must be COMPLETE."""
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        span = f"0..{len(trials) - 1}" if trials else "none yet"
        raise PromoteError(f"study {study.study_name!r} has no trial {number} "
                           f"(trials: {span})")
    trial = match[0]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        why = (trial.user_attrs.get("rejected_reason") or trial.user_attrs.get("fail_reason")
               or (f"stopped after epoch {max(trial.intermediate_values)}"
                   if trial.intermediate_values else ""))
        raise PromoteError(f"trial {number} is {trial.state.name}"
                           f"{f' ({why})' if why else ''}, not COMPLETE: only complete "
                           "trials can be promoted (see `search best`)")
    return trial


def trial_configs(spec: Any, trial: optuna.trial.FrozenTrial) -> tuple[Any, Any, list[str]]:
    """The trial's (ArchConfig, TrainConfig), rebuilt from its parameters by the space.

    Where the study file has changed since the trial ran, the configs the trial
    recorded win, with a note saying so.
    """
    from models import ArchConfig, ConfigError
    from trainers import TrainConfig

    stored: dict[str, Any] = {}
    for key, cls in (("arch", ArchConfig), ("train", TrainConfig)):
        try:
            raw = trial.user_attrs.get(key)
            stored[key] = cls.from_dict(json.loads(raw)) if isinstance(raw, str) else None
        except (ConfigError, ValueError):  # an older or hand-edited record: rebuild instead
            stored[key] = None
    try:
        fixed = optuna.trial.FixedTrial(dict(trial.params))
        rebuilt = {"arch": spec.sample_arch(fixed), "train": spec.sample_train(fixed)}
    except (ValueError, ConfigError) as err:
        if stored["arch"] is None or stored["train"] is None:
            raise PromoteError(f"trial {trial.number}'s parameters do not fit {spec.source} "
                               f"({err}) and the trial recorded no configs") from None
        return stored["arch"], stored["train"], [
            f"trial {trial.number}'s parameters no longer fit {spec.source}; "
            "using the configs the trial recorded"]
    notes = []
    for key in ("arch", "train"):
        if stored[key] is not None and stored[key] != rebuilt[key]:
            notes.append(f"{spec.source} changed since trial {trial.number} ran; using the "
                         f"{'architecture' if key == 'arch' else 'recipe'} the trial recorded")
            rebuilt[key] = stored[key]
    return rebuilt["arch"], rebuilt["train"], notes


def final_recipe(spec: Any, train: Any, epochs: int | None) -> Any:
    """The study's full-training recipe for ``train``, with ``epochs`` if given."""
    from models import ConfigError

    try:
        final = spec.final_train(train)
        if epochs is not None:
            final = dataclasses.replace(final, epochs=epochs)
    except ConfigError as err:
        raise PromoteError(f"the full recipe is invalid: {err}") from None
    return final


def discard(run_dir: Path, out: TextIO) -> None:
    """--restart: remove the checkpoints and outputs of an earlier promote."""
    removed = [p.name for p in (run_dir / n for n in CHECKPOINTS + OUTPUTS) if p.exists()]
    for name in removed:
        (run_dir / name).unlink()
    if removed:
        print(f"restart  removed {', '.join(removed)}", file=out)


def train_and_write(job: PromoteJob, out: TextIO) -> dict[str, Any]:
    """Train (or resume) the run and write every output file; the summary.

    Runs in the calling process or inside a Ray task (which then sends the files
    back, see `_on_ray`).
    """
    import torch

    from models import ArchConfig, count_flops
    from search.plots import plot_confusion, plot_curves
    from search.progress import EpochProgress
    from trainers import TrainConfig, fit, load_cifar10
    from trainers.checkpoint import CheckpointError, code_version, load_latest
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
    if previous is not None and previous["epoch"] >= cfg.epochs:
        print(f"note     the checkpoint is of the last epoch ({cfg.epochs}): nothing left to "
              "train, only the outputs are written again (--restart trains anew)", file=out)
    data = load_cifar10(job.data, progress=lambda m: print(f"data     {m}", file=out, flush=True))
    device = resolve_device(job.device)
    write_json(run_dir / "config.json", {
        "study": job.study, "trial": job.trial, "storage": job.storage,
        "arch": arch.to_dict(), "train": cfg.to_dict(), "seed": cfg.seed,
        "code_version": code_version(), "data_source": data.source,
        "data_digest": data.digest, "device": str(device), "torch": torch.__version__,
    })
    progress = EpochProgress(cfg.epochs, out, tty=job.tty)

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        progress.epoch(metrics)
        rows[:] = [row for row in rows if row["epoch"] < epoch] + [metrics]
        write_metrics(run_dir / "metrics.csv", rows)
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
                     checkpoint_dir=run_dir, deterministic=device.type == "cpu", log=say,
                     on_step=progress.step)
    except CheckpointError as err:
        raise PromoteError(f"{err}; pass --restart to discard it and train from scratch") \
            from None
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: the last checkpoint in {run_dir} is kept; run the same command "
              "to resume", file=out, flush=True)
        raise
    write_metrics(run_dir / "metrics.csv", result.history)
    save_model(result.model, run_dir / "model.pt")
    logits = predict_logits(result.model, data.test_images, tta_flip=cfg.tta_flip, device=device)
    classes = class_report(data.test_labels, logits.argmax(1), data.classes)
    title = f"{job.study} trial {job.trial}: {arch.describe()}"
    plot_curves(result.history, run_dir / "curves.png", title=title)
    plot_confusion(classes.confusion, data.classes, run_dir / "confusion.png",
                   title=f"{job.study} trial {job.trial}: test accuracy "
                         f"{100 * classes.accuracy:.2f}%")
    train_seconds = sum(row["seconds"] for row in result.history)
    summary = {
        "study": job.study, "trial": job.trial,
        "test_acc": classes.accuracy, "test_images": len(data.test_labels),
        "per_class_acc": classes.per_class, "confusion": classes.confusion.tolist(),
        "classes": list(data.classes),
        "val_acc": result.val_acc, "best_val_acc": result.best_val_acc,
        "epochs": result.epochs, "resumed_from": result.resumed_from,
        "n_params": result.n_params, "flops": count_flops(arch),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(result.history)),
        "wall_seconds_this_command": time.perf_counter() - started,
        "device": result.device, "tta_flip": cfg.tta_flip, "code_version": code_version(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch, columns `METRIC_COLUMNS`, written atomically."""
    from trainers.safeio import atomic_writer

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: int(row[k]) if k == "epoch" else f"{row[k]:.6g}"
                         for k in METRIC_COLUMNS})
    with atomic_writer(path) as f:
        f.write(text.getvalue().encode())


def write_json(path: Path, obj: dict[str, Any]) -> None:
    from trainers.safeio import atomic_writer

    with atomic_writer(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _on_ray(job: PromoteJob, address: str, run_dir: Path, out: TextIO) -> dict[str, Any]:
    """Train as a Ray task (one GPU when the cluster has one) and copy the outputs here.

    The task checkpoints into the same path on the node that runs it; to resume
    there after a crash, ``runs/`` should be a folder every node shares.
    """
    import ray

    from search.executors import init_ray, task_error
    from trainers.safeio import atomic_writer

    started = init_ray(address)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1, max_retries=0)(_ray_task)
        print(f"ray      training as a Ray task ({'1 GPU' if gpus else 'CPU'})", file=out,
              flush=True)
        try:
            summary, files = ray.get(task.remote(dataclasses.replace(job, tty=False)))
        except ray.exceptions.RayTaskError as err:
            raise task_error(err) from None
    finally:
        if started:
            ray.shutdown()
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        with atomic_writer(run_dir / name) as f:
            f.write(blob)
    return summary


def _ray_task(job: PromoteJob) -> tuple[dict[str, Any], dict[str, bytes]]:
    summary = train_and_write(job, sys.stdout)
    folder = Path(job.run_dir)
    return summary, {name: (folder / name).read_bytes() for name in OUTPUTS}
