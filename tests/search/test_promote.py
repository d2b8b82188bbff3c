"""`search promote`, `evaluate`, `predict`: a real smoke search, then its trials in full."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from models import ArchConfig, build_model
from search.cli import main
from search.run import RunOptions, run_search
from tests.conftest import SHARED_ARCHIVE
from tests.search.test_service import smoke_file
from trainers import CifarData, load_cifar10
from trainers.inference import predict_logits
from trainers.rundir import METRIC_COLUMNS, OUTPUTS

pytestmark = pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="needs the shared archive")
SEARCH = Path(sys.executable).parent / "search"
PRUNED_TRIAL = 2  # added by hand after the search


@dataclass(frozen=True)
class Searched:
    """A finished smoke search in an SQLite file: trials 0 (baseline) and 1 are COMPLETE."""

    study: Path
    url: str
    name: str
    root: Path

    def argv(self, trial: int, *extra: str) -> list[str]:
        return ["promote", str(trial), "--study", str(self.study), "--storage", self.url,
                "--study-name", self.name,
                "--data", str(SHARED_ARCHIVE), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    root = tmp_path_factory.mktemp("promote")
    # Search on 600 images; the [final] recipe trains on 1,000 for 2 epochs.
    study = smoke_file(root, **{"[final]\nepochs = 2\ntrain_subset = 3000":
                                "[final]\nepochs = 2\ntrain_subset = 1000"})
    url = f"sqlite:///{root / 'study.db'}"
    code = run_search(RunOptions(study=str(study), storage=url, study_name="promo", n_trials=2,
                                 workers=1, executor="local", data=str(SHARED_ARCHIVE),
                                 device="cpu", seed=0), io.StringIO())
    assert code == 0
    store = optuna.load_study(study_name="promo", storage=url)
    assert [t.state for t in store.trials] == [TrialState.COMPLETE] * 2
    store.add_trial(create_trial(
        state=TrialState.PRUNED, params={"stages": 3}, distributions={
            "stages": IntDistribution(2, 3)}, user_attrs={"rejected_reason": "41,000 > 40,000"}))
    return Searched(study, url, "promo", root)


@pytest.fixture(scope="module")
def data() -> CifarData:
    return load_cifar10(SHARED_ARCHIVE)


@pytest.fixture(scope="module")
def promoted(searched: Searched) -> Path:
    """Trial 1 promoted with the study's [final] recipe (2 epochs)."""
    out = searched.root / "trial-1"
    assert main(searched.argv(1, "--out", str(out))) == 0
    return out


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_weights(run: Path) -> torch.nn.Module:
    config = json.loads((run / "config.json").read_text())
    model = build_model(ArchConfig.from_dict(config["arch"]))
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    return model.eval()


def test_promote_writes_every_output(promoted: Path, searched: Searched, data: CifarData,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name in (*OUTPUTS, "checkpoint.pt"):
        assert (promoted / name).stat().st_size > 0, name
    for png in ("curves.png", "confusion.png"):
        with Image.open(promoted / png) as image:
            assert image.format == "PNG" and min(image.size) > 200
    rows = read_metrics(promoted / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 and float(r["seconds"]) > 0 for r in rows)

    config = json.loads((promoted / "config.json").read_text())
    trial = optuna.load_study(study_name=searched.name, storage=searched.url).trials[1]
    assert config["arch"] == json.loads(trial.user_attrs["arch"])
    assert config["train"]["epochs"] == 2 and config["train"]["train_subset"] == 1000
    assert config["trial"] == 1 and config["seed"] == config["train"]["seed"]
    assert config["data_source"] == str(SHARED_ARCHIVE) and config["code_version"]

    summary = json.loads((promoted / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_images"] == 10_000
    assert summary["n_params"] == trial.user_attrs["n_params"]
    assert set(summary["per_class_acc"]) == set(data.classes)
    assert np.array(summary["confusion"]).sum() == 10_000
    # The bare state_dict alone (with config.json) reproduces the recorded test accuracy.
    logits = predict_logits(load_weights(promoted), data.test_images,
                            tta_flip=config["train"]["tta_flip"])
    assert float(np.mean(logits.argmax(1) == data.test_labels)) == summary["test_acc"]
    # The result went back to the trial, where the dashboard shows it.
    assert trial.user_attrs["promoted_test_acc"] == round(summary["test_acc"], 4)
    assert trial.user_attrs["promoted_run_dir"] == str(promoted.resolve())
    assert trial.state == TrialState.COMPLETE
    capsys.readouterr()
    assert main(["best", "--study", searched.name, "--storage", searched.url]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "promoted" in line]
    assert len(shown) == 1 and shown[0].split()[0] == "1"
    assert f"test {100 * summary['test_acc']:.2f}%" in shown[0]


def test_interrupted_promote_resumes_to_the_same_metrics(searched: Searched) -> None:
    straight, broken = searched.root / "straight", searched.root / "broken"
    assert main(searched.argv(0, "--epochs", "3", "--out", str(straight))) == 0

    proc = subprocess.Popen([str(SEARCH), *searched.argv(0, "--epochs", "3", "--out",
                                                         str(broken))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (broken / "checkpoint.pt").exists():  # written after epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted: the last checkpoint" in output
    assert "Traceback" not in output

    again = subprocess.run([str(SEARCH), *searched.argv(0, "--epochs", "3", "--out",
                                                        str(broken))],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint of epoch" in again.stdout
    summary = json.loads((broken / "summary.json").read_text())
    assert summary["resumed_from"] in (1, 2)

    def deterministic(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
                for r in rows]

    assert deterministic(read_metrics(broken / "metrics.csv")) == \
        deterministic(read_metrics(straight / "metrics.csv"))
    assert summary["test_acc"] == json.loads((straight / "summary.json").read_text())["test_acc"]
    assert summary["per_class_acc"] == \
        json.loads((straight / "summary.json").read_text())["per_class_acc"]


def test_predict_writes_one_row_per_id(promoted: Path, data: CifarData, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data.test_labels), 37, replace=False)
    ids = rng.permutation(np.arange(1000, 1037))
    source = tmp_path / "test.pkl"
    source.write_bytes(pickle.dumps({b"data": data.test_images[pick], b"ids": ids}))
    out = tmp_path / "sub" / "submission.csv"
    assert main(["predict", str(promoted), "--input", str(source), "--out", str(out),
                 "--device", "cpu"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ID", "Labels"]
    assert [int(r[0]) for r in rows[1:]] == ids.tolist()
    labels = [int(r[1]) for r in rows[1:]]
    assert set(labels) <= set(range(10))
    expected = predict_logits(load_weights(promoted), data.test_images[pick],
                              tta_flip=True).argmax(1)
    assert labels == expected.tolist()
    assert "37 rows" in capsys.readouterr().out


def test_predict_reads_an_image_folder(promoted: Path, data: CifarData, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(data.test_images[i]).save(folder / f"img{i}.png")
    out = tmp_path / "folder.csv"
    assert main(["predict", str(promoted / "model.pt"), "--input", str(folder), "--out",
                 str(out), "--device", "cpu"]) == 0
    rows = list(csv.reader(out.open()))
    assert [r[0] for r in rows[1:]] == [f"img{i}" for i in range(5)]
    assert all(r[1] in {str(k) for k in range(10)} for r in rows[1:])


def test_evaluate_gives_the_recorded_accuracy_and_a_confusion_png(
        promoted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((promoted / "summary.json").read_text())
    for target in (promoted, promoted / "checkpoint.pt"):
        out = tmp_path / target.name
        assert main(["evaluate", str(target), "--data", str(SHARED_ARCHIVE), "--out", str(out),
                     "--device", "cpu"]) == 0
        text = capsys.readouterr().out
        assert f"accuracy {100 * summary['test_acc']:.2f}%" in text
        assert "airplane" in text and "most confused with" in text
        result = json.loads((out / "evaluation.json").read_text())
        assert result["accuracy"] == summary["test_acc"]  # checkpoint: the same (no EMA)
        assert np.array(result["confusion"]).sum() == 10_000
        with Image.open(out / "confusion.png") as image:
            assert image.format == "PNG"


def test_promote_on_a_ray_task(searched: Searched, promoted: Path) -> None:
    out = searched.root / "ray"
    code = main(searched.argv(1, "--out", str(out), "--ray-address", "local"))
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).exists(), name
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, promoted))
    assert mine["test_acc"] == theirs["test_acc"]  # same seed, same CPU kernels


def one_line_error(code: int, capsys: pytest.CaptureFixture[str], *parts: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("search: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, (part, err)


def test_promote_errors_exit_2(searched: Searched, promoted: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(main(["promote", "0", "--study", "no-such-study"]), capsys,
                   "'no-such-study'", "smoke")
    one_line_error(main(["promote", "0", "--study", str(searched.study), "--storage",
                         searched.url, "--study-name", "other"]), capsys,
                   "'other'", "promo")
    one_line_error(main(searched.argv(7)), capsys, "no trial 7", "0..2")
    one_line_error(main(searched.argv(PRUNED_TRIAL)), capsys,
                   f"trial {PRUNED_TRIAL} is PRUNED", "41,000 > 40,000", "not COMPLETE")
    # Trial 0's network into trial 1's run folder: its checkpoint is of another architecture.
    one_line_error(main(searched.argv(0, "--out", str(promoted))), capsys,
                   "another architecture", "--restart")
    config = json.loads((promoted / "config.json").read_text())  # left as it was
    assert config["trial"] == 1 and config["arch"] == load_weights(promoted).arch.to_dict()
    one_line_error(main(searched.argv(1, "--data", str(tmp_path / "missing.tar.gz"))), capsys,
                   "missing.tar.gz")


def test_evaluate_and_predict_errors_exit_2(promoted: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    one_line_error(main(["evaluate", str(garbage), "--data", str(SHARED_ARCHIVE)]), capsys,
                   "garbage.pt", "unreadable")
    one_line_error(main(["predict", str(tmp_path), "--input", "x.pkl"]), capsys,
                   "neither model.pt nor checkpoint.pt")
    # Weights of one network beside the config of another.
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((promoted / "config.json").read_text())
    config["arch"]["stem_width"] = config["arch"]["stem_width"] * 2
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.pt").write_bytes((promoted / "model.pt").read_bytes())
    one_line_error(main(["predict", str(other), "--input", "x.pkl"]), capsys,
                   "do not fit the architecture")
    bad_input = tmp_path / "bad.pkl"
    bad_input.write_bytes(pickle.dumps({b"data": np.zeros((3, 28, 28), np.uint8),
                                        b"ids": [1, 2, 3]}))
    one_line_error(main(["predict", str(promoted), "--input", str(bad_input)]), capsys,
                   "bad.pkl", "32 x 32 x 3")
    one_line_error(main(["predict", str(promoted), "--input", str(tmp_path / "none.pkl")]),
                   capsys, "none.pkl", "no such file")
    not_pickle = tmp_path / "text.pkl"
    not_pickle.write_text("hello")
    one_line_error(main(["predict", str(promoted), "--input", str(not_pickle)]), capsys,
                   "text.pkl")
    one_line_error(main(["evaluate", str(promoted), "--data", str(tmp_path / "nodata")]),
                   capsys, "nodata")
    assert not os.path.exists("submission.csv")
