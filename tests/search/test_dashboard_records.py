"""What the dashboard reads, recorded by a real smoke search and promote (the session's
``searched`` and ``promoted`` fixtures): the study's attributes and metric name, a note
per trial with its architecture as a table, the promoted run's files and a submission
CSV in the artifact store. The browser test (`test_browser.py`) shows them rendered."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard._note import get_note_from_system_attrs
from optuna_dashboard.artifact._backend import list_trial_artifacts

from models import ArchConfig
from search import record
from search.cli import main
from search.dashboard import ARTIFACT_STORE, RUN_FILES, trial_artifacts
from tests.search.smoke import Searched
from trainers import CifarData


def load(searched: Searched) -> optuna.Study:
    return optuna.load_study(study_name=searched.name, storage=searched.url)


def test_the_study_names_its_objective_and_describes_itself(searched: Searched) -> None:
    study = load(searched)
    assert study.metric_names == ["val_acc"]
    attrs = study.user_attrs
    assert attrs["budget"] == 40_000  # the smoke study's
    assert attrs["description"] and attrs["space_fingerprint"]
    assert attrs["data_source"].endswith("cifar10-jpeg.tar.gz")


def test_each_trial_has_a_note_with_its_architecture_as_a_table(searched: Searched) -> None:
    study = load(searched)
    system = study._storage.get_study_system_attrs(study._study_id)
    for trial in study.get_trials(states=[TrialState.COMPLETE]):
        body = get_note_from_system_attrs(system, trial._trial_id)["body"]
        arch = ArchConfig.from_dict(json.loads(record.stored_config(trial, record.ARCH) or ""))
        assert body.startswith(f"### Trial {trial.number}: val_acc {trial.value:.4f}")
        assert f"**{trial.user_attrs['n_params']:,} parameters** of the 40,000 budget" in body
        rows = [line for line in body.splitlines() if line.startswith("| ") and
                line[2].isdigit()]
        assert len(rows) == len(arch.stages)
        for i, (row, stage) in enumerate(zip(rows, arch.stages, strict=True), start=1):
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[:5] == [str(i), str(stage.blocks), str(stage.width),
                                 str(stage.kernel), str(stage.stride)], row
        epochs = len(trial.intermediate_values)
        assert f"{epochs} epoch(s): validation accuracy" in body
        # The architecture's JSON is a system attribute, not a line on the trial's page.
        assert record.ARCH not in trial.user_attrs and record.TRAIN not in trial.user_attrs
        assert record.ARCH in trial.system_attrs


def test_the_promoted_runs_files_are_artifacts_of_its_trial(searched: Searched,
                                                            promoted: Path) -> None:
    study = load(searched)
    trial = study.trials[1]
    metas = trial_artifacts(trial)
    assert sorted(m["filename"] for m in metas) == sorted(RUN_FILES)
    location = Path(study._storage.get_study_system_attrs(study._study_id)[ARTIFACT_STORE])
    assert location == (searched.root / "artifacts").resolve()  # beside the SQLite file
    for meta in metas:
        stored = location / meta["artifact_id"]
        assert stored.read_bytes() == (promoted / meta["filename"]).read_bytes()
    assert {m["mimetype"] for m in metas} >= {"image/png", "application/json", "text/csv"}
    # optuna-dashboard's own reader lists them on the trial.
    listed = list_trial_artifacts({}, trial.system_attrs, trial)
    assert sorted(m["filename"] for m in listed) == sorted(RUN_FILES)
    assert not trial_artifacts(study.trials[0])  # trial 0 was not promoted


def test_predict_attaches_its_csv_to_the_trial(searched: Searched, promoted: Path,
                                               data: CifarData, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "test.pkl"
    source.write_bytes(pickle.dumps({b"data": data.test_images[:50],
                                     b"ids": np.arange(50)}))
    out = tmp_path / "submission.csv"
    argv = ["predict", str(promoted), "--input", str(source), "--out", str(out),
            "--device", "cpu", "--attach", "--storage", searched.url]
    # Written once, then again: the trial keeps one submission.csv, the latest.
    for _ in range(2):
        assert main(argv) == 0
        assert "attached submission.csv to trial 1 of study promo" in capsys.readouterr().out
    trial = load(searched).trials[1]
    csvs = [m for m in trial_artifacts(trial) if m["filename"] == "submission.csv"]
    assert len(csvs) == 1
    location = Path(load(searched)._storage.get_study_system_attrs(
        load(searched)._study_id)[ARTIFACT_STORE])
    assert (location / csvs[0]["artifact_id"]).read_bytes() == out.read_bytes()
    # The run's config.json has the store URL with its password masked (the fixture
    # promoted through a URL with one): then --storage is needed.
    assert main([*argv[:-2]]) == 2
    assert "the store URL is recorded masked" in capsys.readouterr().err
    # An ensemble's CSV belongs to no one trial.
    assert main(["predict", str(promoted), str(promoted), "--input", str(source), "--out",
                 str(out), "--attach"]) == 2
    assert "--attach: one run only" in capsys.readouterr().err
