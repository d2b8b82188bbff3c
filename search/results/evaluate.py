"""`search evaluate` and `search predict`: a trained model, or an ensemble of several,
on labelled or new images.

Both take run folders, their ``model.pt`` or any training checkpoint (`load_model`).
Evaluate writes into the run folder's ``eval-<data>/``, or for an ensemble into
``runs/ensembles/<digest>/eval-<data>/`` (`trainers.rundir`); an ensemble averages
its members' softmax (`search.results.ensemble`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from search.args import UsageError, os_reason
from trainers import rundir
from trainers.inference import ClassReport, LoadedModel


@dataclass(frozen=True)
class Evaluation:
    report: ClassReport
    model: LoadedModel  # the first member's, for an ensemble
    data_source: str
    confusion_png: Path
    json_path: Path
    members: list[dict[str, Any]] = field(default_factory=list)  # ensembles: each member
    budget: dict[str, Any] | None = None  # ensembles: parameters against the budget


def _device(device: str | None) -> str:
    from trainers.training import resolve_device

    return str(resolve_device(device))


def default_data(model_path: Path) -> str | None:
    """The data set the run was trained on, from its config.json, if it still exists."""
    try:
        source = rundir.read_config(rundir.folder_of(model_path)).get("data_source")
    except ValueError:
        return None
    return source if isinstance(source, str) and Path(source).exists() else None


def evaluate_run(model_paths: str | list[str], data: str | None, out_dir: str | None,
                 device: str | None, out: TextIO,
                 weights: str | None = None) -> Evaluation:
    """Accuracy, per-class accuracy and a confusion matrix on a data set's test split, of
    one model or of the ensemble of several (``weights``: ``"2,1"``, default equal)."""
    from search.results.ensemble import (
        budget_note,
        ensemble_folder,
        load_members,
        mean_probs,
        member_probs,
        parse_weights,
    )
    from search.results.plots import plot_confusion
    from search.storage import RUNS_DIR
    from trainers import load_cifar10
    from trainers.inference import class_report
    from trainers.locate import find_data

    paths = [model_paths] if isinstance(model_paths, str) else list(model_paths)
    if out_dir and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"--out {out_dir}: is a file, not a directory")  # before the work
    factors = parse_weights(weights, len(paths))
    members = load_members(paths, _device(device))
    first = Path(paths[0]).expanduser()
    source = find_data(data or default_data(first))
    dataset = load_cifar10(source, progress=lambda m: print(f"data     {m}", file=out,
                                                             flush=True))
    probs = member_probs(members, dataset.test_images)
    report = class_report(dataset.test_labels, mean_probs(probs, factors).argmax(1),
                          dataset.classes)
    ensemble = len(members) > 1
    rows, budget = [], None
    if ensemble:
        for m, p, w in zip(members, probs, factors, strict=True):
            acc = float((p.argmax(1) == dataset.test_labels).mean())
            rows.append({**m.describe(), "weight": w, **m.tta(), "test_acc": acc})
        total, limit, warning = budget_note(members)
        budget = {"total_params": total, "budget": limit, "over_budget": warning is not None,
                  "warning": warning}
        folder = Path(out_dir) if out_dir else rundir.eval_dir(
            ensemble_folder(RUNS_DIR, members), source)
        name = f"ensemble of {len(members)}, {total:,} parameters"
    else:
        folder = Path(out_dir) if out_dir else rundir.eval_dir(rundir.folder_of(first), source)
        name = members[0].loaded.arch.describe()
    try:
        png = plot_confusion(report.confusion, dataset.classes,
                             _mkdir(folder, "--out") / rundir.CONFUSION,
                             title=f"{name}\n{dataset.source}: test accuracy "
                                   f"{100 * report.accuracy:.2f}%")
        head = ({"models": rows, **(budget or {})} if ensemble else
                {"model": str(members[0].loaded.source), **members[0].tta()})
        json_path = rundir.write_evaluation(folder, {
            **head, "data_source": dataset.source, "data_digest": dataset.digest,
            "test_images": len(dataset.test_labels), **report.to_dict()})
    except OSError as err:
        raise UsageError(f"{folder}: cannot write the evaluation: {os_reason(err)}") from None
    return Evaluation(report, members[0].loaded, dataset.source, png, json_path, rows, budget)


def print_evaluation(ev: Evaluation, out: TextIO) -> None:
    r = ev.report
    if not ev.members:
        print(f"model    {ev.model.source}: {ev.model.arch.describe()}", file=out)
    for i, m in enumerate(ev.members, start=1):
        print(f"member {i} {m['run']}: {m['arch']}, {m['n_params']:,} parameters, weight "
              f"{m['weight']:g}, test accuracy {100 * m['test_acc']:.2f}%", file=out)
    print(f"data     {ev.data_source}: {int(r.confusion.sum()):,} test images", file=out)
    if ev.budget is not None:
        print(f"ensemble {len(ev.members)} members, {ev.budget['total_params']:,} parameters "
              f"(budget {ev.budget['budget']:,})", file=out)
        if ev.budget["warning"]:
            print(f"warning  {ev.budget['warning']}", file=out)
    print(f"accuracy {100 * r.accuracy:.2f}%{' (ensemble)' if ev.members else ''}", file=out)
    print(f"{'class':<12} {'accuracy':>8} {'images':>7}  most confused with", file=out)
    for i, (name, acc) in enumerate(r.per_class.items()):
        row = r.confusion[i].copy()
        row[i] = 0
        worst = int(row.argmax())
        confused = f"{r.classes[worst]} ({int(row[worst])})" if row[worst] else "-"
        print(f"{name:<12} {100 * acc:>7.2f}% {int(r.confusion[i].sum()):>7,}  {confused}",
              file=out)
    print(f"written  {ev.confusion_png}, {ev.json_path}", file=out)


def predict_file(model_paths: str | list[str], input_path: str, out_csv: str,
                 device: str | None, out: TextIO, weights: str | None = None) -> int:
    """Write ``ID,Labels`` rows for an unlabelled pickle or image folder, by one model or
    the ensemble of several; how many."""
    from search.results.ensemble import (
        budget_note,
        load_members,
        mean_probs,
        member_probs,
        parse_weights,
    )
    from trainers.data import read_unlabeled
    from trainers.safeio import atomic_writer

    paths = [model_paths] if isinstance(model_paths, str) else list(model_paths)
    target = Path(out_csv)
    if target.is_dir():  # before the model runs: the CSV could not be written
        raise UsageError(f"--out {out_csv}: is a directory; name a CSV file (such as "
                         f"{target / 'submission.csv'})")
    factors = parse_weights(weights, len(paths))
    members = load_members(paths, _device(device))
    images, ids = read_unlabeled(input_path)
    labels = mean_probs(member_probs(members, images), factors).argmax(1)
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
    for i, m in enumerate(members, start=1):
        print(f"{'model   ' if len(members) == 1 else f'member {i}'} {m.loaded.source}: "
              f"{m.loaded.arch.describe()}", file=out)
    if len(members) > 1:
        total, limit, warning = budget_note(members)
        print(f"ensemble {len(members)} members, {total:,} parameters (budget {limit:,})",
              file=out)
        if warning:
            print(f"warning  {warning}", file=out)
    print(f"input    {input_path}: {len(ids):,} images", file=out)
    print(f"written  {target}: {len(ids):,} rows; predicted per class "
          + json.dumps(counts.tolist()), file=out)
    return len(ids)


def _mkdir(folder: Path, option: str) -> Path:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: is a file, not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

