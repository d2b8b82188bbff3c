"""What optuna-dashboard shows beyond numbers.

- The study's user attributes: budget, space fingerprint, description, data source
  (the study page's table).
- A markdown note per trial (optuna-dashboard's notes): the architecture as a table,
  its parameters against the budget, and a summary of its epochs.
- A promoted run's files (curves.png, confusion.png, summary.json, metrics.csv) and a
  submission CSV in Optuna's artifact store, listed on the trial's page. The store is
  a folder beside the study by default (``artifacts/`` next to an SQLite file, else
  ``runs/<study>/artifacts``), or any backend Optuna has by URL (``s3://bucket``,
  ``gs://bucket``); where it is goes into the study's system attributes, so that
  later commands and ``search dashboard`` find it.

Optuna refuses to change a finished trial through its API; a promoted trial is
finished, so its artifact records are written into Optuna's trial system-attribute
table directly (``artifacts:<id>``, as `optuna.artifacts.upload_artifact` writes them),
as `search.storage.set_finished_trial_attrs` does for user attributes.
"""

from __future__ import annotations

import json
import math
import mimetypes
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from search import record
from trainers import rundir

ARTIFACT_STORE = "artifact_store"  # study system attribute: where its artifacts live
STUDY_BUDGET, STUDY_DESCRIPTION, STUDY_DATA = "budget", "description", "data_source"
RUN_FILES = (rundir.CURVES, rundir.CONFUSION, rundir.SUMMARY, rundir.METRICS)


class ArtifactStoreError(RuntimeError):
    """An artifact store location that cannot be used."""


# -- the study page -------------------------------------------------------------------------

def describe_study(study: optuna.Study, spec: Any, data_source: str | None) -> None:
    """The study's budget, description and data source as user attributes (the
    fingerprint and the study file are set by `search.run.check_space`)."""
    attrs = {STUDY_BUDGET: int(spec.budget),
             STUDY_DESCRIPTION: getattr(spec, "description", "") or spec.name}
    if data_source:
        attrs[STUDY_DATA] = data_source
    current = study.user_attrs
    for key, value in attrs.items():
        if current.get(key) != value:
            study.set_user_attr(key, value)


# -- trial notes ------------------------------------------------------------------------------

def arch_table(arch: Any) -> str:
    """The architecture as a markdown table: a row per stage, then the network's settings."""
    default = arch.block
    rows = ["| stage | blocks | width | kernel | stride | block type |",
            "|---:|---:|---:|---:|---:|---|"]
    for i, stage in enumerate(arch.stages, start=1):
        block = stage.block or default
        rows.append(f"| {i} | {stage.blocks} | {stage.width} | {stage.kernel} | "
                    f"{stage.stride} | {_block_text(block)} |")
    extra = [f"stem {arch.stem_width} channels, kernel {arch.stem_kernel}",
             f"shortcut kernel {arch.shortcut_kernel}"
             + (", avg-pool shortcut" if arch.shortcut_pool else ""),
             f"head {arch.pool} pooling"
             + (f" (window {arch.pool_kernel})" if arch.pool_kernel else "")]
    if arch.se_ratio:
        extra.append(f"squeeze-excitation {arch.se_ratio:g}")
    if arch.dropout:
        extra.append(f"dropout {arch.dropout:g}")
    if arch.branch_drop != "none":
        extra.append(f"{arch.branch_drop} {arch.branch_drop_rate:g}")
    return "\n".join(rows) + "\n\n" + "; ".join(extra)


def _block_text(block: Any) -> str:
    settings = {k: v for k, v in block.to_dict().items() if k != "type"}
    inner = ", ".join(f"{k} {v}" for k, v in settings.items())
    return f"{block.name}" + (f" ({inner})" if inner else "")


def curve_summary(history: Sequence[Mapping[str, float]]) -> str:
    """One line on a run's epochs: validation accuracy first and last, the best, speed."""
    if not history:
        return "no epoch finished"
    accs = [h.get("val_acc", math.nan) for h in history]
    finite = [(a, i + 1) for i, a in enumerate(accs) if math.isfinite(a)]
    seconds = sum(h.get("seconds", 0.0) for h in history) / len(history)
    if not finite:
        return f"{len(history)} epoch(s), {seconds:.1f} s each"
    best, at = max(finite)
    return (f"{len(history)} epoch(s): validation accuracy {100 * finite[0][0]:.2f}% after "
            f"epoch {finite[0][1]}, {100 * finite[-1][0]:.2f}% after epoch {finite[-1][1]} "
            f"(best {100 * best:.2f}% at epoch {at}); {seconds:.1f} s per epoch")


def trial_note(number: int, candidate: Any, budget: int,
               history: Sequence[Mapping[str, float]], outcome: str) -> str:
    """A trial's note: what it trained, how big against the budget, how it went."""
    arch, train = candidate.arch, candidate.train
    share = candidate.n_params / budget if budget else math.nan
    return "\n".join([
        f"### Trial {number}: {outcome}",
        "",
        f"**{candidate.n_params:,} parameters** of the {budget:,} budget ({100 * share:.1f}%), "
        f"{candidate.flops / 1e6:,.1f} MFLOPs per image.",
        "",
        arch_table(arch),
        "",
        f"**Epochs** {curve_summary(history)}.",
        "",
        f"**Recipe** {train.optimizer} lr {train.lr:.3g}, batch {train.batch_size}, "
        f"{train.epochs} epochs, weight decay {train.weight_decay:.2g}, label smoothing "
        f"{train.label_smoothing:g}, cutout {train.cutout}, mixup {train.mixup:g}, "
        f"cutmix {train.cutmix:g}, policy {train.policy}.",
    ])


def save_trial_note(trial: optuna.Trial, body: str) -> None:
    """``body`` as the trial's note in optuna-dashboard (a new version of it)."""
    from optuna_dashboard import save_note

    save_note(trial, body)


# -- artifacts --------------------------------------------------------------------------------

def default_location(url: str, study_name: str) -> str:
    """``artifacts/`` beside an SQLite file; else ``runs/<study>/artifacts`` here."""
    from sqlalchemy.engine import make_url

    from search.storage import RUNS_DIR

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(Path(parsed.database).resolve().parent / "artifacts")
    return str((RUNS_DIR / study_name / "artifacts").resolve())


def open_artifact_store(location: str) -> Any:
    """An Optuna artifact store for a folder, ``file://`` URL, ``s3://bucket`` or
    ``gs://bucket``; `ArtifactStoreError` when its package is missing."""
    from optuna.artifacts import FileSystemArtifactStore

    if location.startswith(("s3://", "gs://")):
        scheme, _, rest = location.partition("://")
        bucket = rest.split("/")[0]
        try:
            if scheme == "s3":
                from optuna.artifacts import Boto3ArtifactStore

                return Boto3ArtifactStore(bucket)
            from optuna.artifacts import GCSArtifactStore

            return GCSArtifactStore(bucket)
        except ImportError as err:
            package = "boto3" if scheme == "s3" else "google-cloud-storage"
            raise ArtifactStoreError(f"artifact store {location}: needs the {package} package "
                                     f"({err})") from None
    path = Path(location.removeprefix("file://"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArtifactStoreError(f"artifact store {location}: cannot create the folder "
                                 f"({err.strerror or err})") from None
    return FileSystemArtifactStore(str(path))


def artifact_location(storage: Any, study_id: int, url: str, study_name: str,
                      given: str | None = None) -> str:
    """Where the study's artifacts go: ``given`` (then recorded), else the recorded
    place, else the default (then recorded)."""
    recorded = storage.get_study_system_attrs(study_id).get(ARTIFACT_STORE)
    location = given or recorded or default_location(url, study_name)
    if given and not given.startswith(("s3://", "gs://")):
        location = str(Path(given.removeprefix("file://")).resolve())
    if location != recorded:
        storage.set_study_system_attr(study_id, ARTIFACT_STORE, location)
    return str(location)


def upload_to_finished_trial(url: str, study_name: str, number: int,
                             paths: Iterable[Path], given: str | None = None
                             ) -> tuple[str, list[dict[str, Any]]]:
    """Put ``paths`` into the study's artifact store and list them on trial ``number``
    (finished or not); the store's location and the artifacts' records."""
    import sqlalchemy
    from optuna.storages._rdb import models

    from search.storage import open_storage

    storage = open_storage(url, heartbeat=False)
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    location = artifact_location(storage, study_id, url, study_name, given)
    store = open_artifact_store(location)
    metas = []
    for path in paths:
        artifact_id = str(uuid.uuid4())
        mimetype, encoding = mimetypes.guess_type(path.name)
        meta = {"artifact_id": artifact_id, "filename": path.name,
                "mimetype": mimetype or "application/octet-stream", "encoding": encoding}
        with path.open("rb") as f:
            store.write(artifact_id, f)
        metas.append(meta)
    # A new upload of a file of the same name replaces the trial's record of the old one.
    old = {key: json.loads(value) for key, value in storage.get_trial_system_attrs(
        trial_id).items() if key.startswith("artifacts:") and value}
    replaced = [key for key, value in old.items()
                if value and value.get("filename") in {m["filename"] for m in metas}]
    table = models.TrialSystemAttributeModel.__table__
    with storage.engine.begin() as conn:
        for key in replaced:
            conn.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id,
                                                        table.c.key == key))
        for meta in metas:
            conn.execute(sqlalchemy.insert(table).values(
                trial_id=trial_id, key=f"artifacts:{meta['artifact_id']}",
                value_json=json.dumps(json.dumps(meta))))
    for key in replaced:
        try:
            store.remove(key.removeprefix("artifacts:"))
        except Exception:  # a file already gone is no reason to fail
            pass
    return location, metas


def run_trial(model_path: str | Path, storage: str | None) -> tuple[str, str, int]:
    """(store URL, study name, trial number) of the run folder a model belongs to, from
    its config.json; ``storage`` where the recorded URL lost its password to masking.

    Raises:
        ValueError: no config.json naming a study and trial, or a masked URL and no
            ``storage``.
    """
    path = Path(model_path)
    config_path = (path if path.is_dir() else path.parent) / rundir.CONFIG
    try:
        config = json.loads(config_path.read_text())
        study, number = str(config["study"]), int(config["trial"])
        recorded = str(config.get("storage") or "")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: no promoted run's config.json naming its study "
                         f"and trial ({err})") from None
    url = storage or recorded
    if not url or "***" in url:
        raise ValueError(f"{config_path}: the store URL is recorded masked ({recorded}); "
                         "pass --storage URL")
    return url, study, number


def trial_artifacts(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The artifact records on a trial, oldest first."""
    metas = [json.loads(value) for key, value in trial.system_attrs.items()
             if key.startswith("artifacts:") and value]
    return sorted(metas, key=lambda m: str(m["filename"]))


def note_outcome(value: float | None, pruned_after: int | None) -> str:
    if pruned_after is not None:
        return f"pruned after epoch {pruned_after}"
    return "finished" if value is None else f"{record.OBJECTIVE.metric} {value:.4f}"
