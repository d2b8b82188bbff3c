"""`search evaluate` and `search predict`: a trained model on labelled or new images.

Both take a run folder, its ``model.pt`` or any training checkpoint (`load_model`);
evaluate writes into the run folder's ``eval-<data>/`` (`trainers.rundir`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from search.args import UsageError, os_reason
from trainers import rundir
from trainers.inference import ClassReport, LoadedModel, load_model


@dataclass(frozen=True)
class Evaluation:
    report: ClassReport
    model: LoadedModel
    data_source: str
    confusion_png: Path
    json_path: Path


def _device(device: str | None) -> str:
    from trainers.training import resolve_device

    return str(resolve_device(device))


def _tta(loaded: LoadedModel) -> dict[str, Any]:
    """The run's test-time augmentation, as `predict_logits` keywords."""
    if loaded.train is None:
        return {"tta_flip": False}
    return {"tta_flip": loaded.train.tta_flip, "tta_translate": loaded.train.tta_translate}


def default_data(model_path: Path) -> str | None:
    """The data set the run was trained on, from its config.json, if it still exists."""
    try:
        source = rundir.read_config(rundir.folder_of(model_path)).get("data_source")
    except ValueError:
        return None
    return source if isinstance(source, str) and Path(source).exists() else None


def evaluate_run(model_path: str, data: str | None, out_dir: str | None,
                 device: str | None, out: TextIO) -> Evaluation:
    """Accuracy, per-class accuracy and a confusion matrix on a data set's test split."""
    from search.results.plots import plot_confusion
    from trainers import load_cifar10
    from trainers.inference import class_report, predict_logits
    from trainers.locate import find_data

    path = Path(model_path).expanduser()
    if out_dir and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"--out {out_dir}: is a file, not a directory")  # before the work
    loaded = load_model(path, _device(device))
    source = find_data(data or default_data(path))
    dataset = load_cifar10(source, progress=lambda m: print(f"data     {m}", file=out,
                                                             flush=True))
    logits = predict_logits(loaded.model, dataset.test_images, **_tta(loaded),
                            device=loaded.device)
    report = class_report(dataset.test_labels, logits.argmax(1), dataset.classes)
    folder = Path(out_dir) if out_dir else rundir.eval_dir(rundir.folder_of(path), source)
    try:
        png = plot_confusion(report.confusion, dataset.classes,
                             _mkdir(folder, "--out") / rundir.CONFUSION,
                             title=f"{loaded.arch.describe()}\n{dataset.source}: test accuracy "
                                   f"{100 * report.accuracy:.2f}%")
        json_path = rundir.write_evaluation(folder, {
            "model": str(loaded.source), "data_source": dataset.source,
            "data_digest": dataset.digest, "test_images": len(dataset.test_labels),
            **_tta(loaded), **report.to_dict()})
    except OSError as err:
        raise UsageError(f"{folder}: cannot write the evaluation: {os_reason(err)}") from None
    return Evaluation(report, loaded, dataset.source, png, json_path)


def print_evaluation(ev: Evaluation, out: TextIO) -> None:
    r = ev.report
    print(f"model    {ev.model.source}: {ev.model.arch.describe()}", file=out)
    print(f"data     {ev.data_source}: {int(r.confusion.sum()):,} test images", file=out)
    print(f"accuracy {100 * r.accuracy:.2f}%", file=out)
    print(f"{'class':<12} {'accuracy':>8} {'images':>7}  most confused with", file=out)
    for i, (name, acc) in enumerate(r.per_class.items()):
        row = r.confusion[i].copy()
        row[i] = 0
        worst = int(row.argmax())
        confused = f"{r.classes[worst]} ({int(row[worst])})" if row[worst] else "-"
        print(f"{name:<12} {100 * acc:>7.2f}% {int(r.confusion[i].sum()):>7,}  {confused}",
              file=out)
    print(f"written  {ev.confusion_png}, {ev.json_path}", file=out)


def predict_file(model_path: str, input_path: str, out_csv: str, device: str | None,
                 out: TextIO) -> int:
    """Write ``ID,Labels`` rows for an unlabelled pickle or image folder; how many."""
    from trainers.data import read_unlabeled
    from trainers.inference import predict_logits
    from trainers.safeio import atomic_writer

    target = Path(out_csv)
    if target.is_dir():  # before the model runs: the CSV could not be written
        raise UsageError(f"--out {out_csv}: is a directory; name a CSV file (such as "
                         f"{target / 'submission.csv'})")
    loaded = load_model(Path(model_path), _device(device))
    images, ids = read_unlabeled(input_path)
    labels = predict_logits(loaded.model, images, **_tta(loaded),
                            device=loaded.device).argmax(1)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("ID", "Labels"))
    for image_id, label in zip(ids.tolist(), labels.tolist(), strict=True):
        writer.writerow((image_id, int(label)))
    try:
        _mkdir(target.parent, "--out")
        with atomic_writer(target) as f:
            f.write(text.getvalue().encode())
    except OSError as err:
        raise UsageError(f"--out {out_csv}: cannot write it: {os_reason(err)}") from None
    counts = np.bincount(labels, minlength=10)
    print(f"model    {loaded.source}: {loaded.arch.describe()}", file=out)
    print(f"input    {input_path}: {len(ids):,} images", file=out)
    print(f"written  {target}: {len(ids):,} rows; predicted per class "
          + json.dumps(counts.tolist()), file=out)
    return len(ids)


def _mkdir(folder: Path, option: str) -> Path:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: is a file, not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

