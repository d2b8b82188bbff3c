"""`search promote`, `evaluate`, `predict`: a real smoke search, then its trials in full
(the search and trial 1's promoted run are session fixtures in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image

from models import ArchConfig, build_model
from search.cli import main
from tests.conftest import SHARED_ARCHIVE
from tests.search.smoke import EACH_EPOCH, SECRET, Searched, fresh_threads
from trainers import CifarData, rundir
from trainers.inference import predict_logits
from trainers.rundir import METRIC_COLUMNS, OUTPUTS

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it
SEARCH = Path(sys.executable).parent / "search"
PRUNED_TRIAL = 2  # added by hand after the search


@pytest.fixture(scope="module")
def predicted(promoted: Path, data: CifarData) -> np.ndarray:
    """The promoted network's own test-set classes, with its recipe's test-time flips.

    Also the precondition of every test on the promoted run: the network learned.
    """
    tta = json.loads((promoted / "config.json").read_text())["train"]["tta_flip"]
    labels = predict_logits(load_weights(promoted), data.test_images, tta_flip=tta).argmax(1)
    accuracy = float(np.mean(labels == data.test_labels))
    assert accuracy > 0.2, f"the promoted network did not learn: test accuracy {accuracy}"
    assert len(set(labels.tolist())) >= 3, np.bincount(labels, minlength=10)
    return labels


def run_tta(run: Path) -> bool:
    """The run's own test-time augmentation setting, from its config.json."""
    return bool(json.loads((run / "config.json").read_text())["train"]["tta_flip"])


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_weights(run: Path) -> torch.nn.Module:
    config = json.loads((run / "config.json").read_text())
    model = build_model(ArchConfig.from_dict(config["arch"]))
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    return model.eval()


def test_promote_writes_every_output(promote_output: tuple[Path, str], searched: Searched,
                                     data: CifarData, predicted: np.ndarray,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    promoted, printed = promote_output
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
    assert config["arch"] == json.loads(trial.system_attrs["arch"])
    assert config["train"]["epochs"] == 2 and config["train"]["train_subset"] == 2000
    assert config["trial"] == 1 and config["seed"] == config["train"]["seed"]
    assert config["data_source"] == str(SHARED_ARCHIVE) and config["code_version"]

    summary = json.loads((promoted / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_images"] == 10_000
    assert summary["n_params"] == trial.user_attrs["n_params"]
    assert set(summary["per_class_acc"]) == set(data.classes)
    assert np.array(summary["confusion"]).sum() == 10_000
    # The bare state_dict alone (with config.json) reproduces the recorded test accuracy.
    assert float(np.mean(predicted == data.test_labels)) == summary["test_acc"]
    assert summary["tta_flip"] is True
    # The store URL's password went nowhere: not into config.json, not to the screen.
    assert "storage" in config and config["storage"].startswith(searched.url)
    for name in (*OUTPUTS, "promote.lock"):
        assert SECRET.encode() not in (promoted / name).read_bytes(), name
    assert SECRET not in printed and "promoted_test_acc" in printed
    # The result went back to the trial, where the dashboard shows it.
    assert trial.user_attrs["promoted_test_acc"] == round(summary["test_acc"], 4)
    assert trial.user_attrs["promoted_run_dir"] == str(promoted.resolve())
    assert trial.state == TrialState.COMPLETE
    capsys.readouterr()
    assert main(["best", "--study", searched.name, "--storage", searched.url]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "promoted" in line]
    assert len(shown) == 1 and shown[0].split()[0] == "1"
    assert f"test {100 * summary['test_acc']:.2f}%" in shown[0]


def test_a_final_run_without_validation_writes_every_output(searched: Searched,
                                                           tmp_path: Path) -> None:
    # resnet-budget's [final] trains on every training image (val_size = 0), as the
    # course designs' final runs did: no per-epoch validation, the test split at the end.
    study = tmp_path / "no-validation.toml"
    study.write_text(searched.study.read_text().replace("[final]\n", "[final]\nval_size = 0\n", 1))
    out = tmp_path / "all-images"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["promote", "1", "--study", str(study), "--storage", searched.url,
                     "--study-name", searched.name, "--data", str(SHARED_ARCHIVE),
                     "--device", "cpu", "--epochs", "1", "--out", str(out)])
    assert code == 0, printed.getvalue()
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "config.json").read_text())["train"]["val_size"] == 0
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["val_acc"] is None and summary["best_val_acc"] is None
    assert summary["validation"].startswith("none: val_size = 0")
    assert 0.0 < summary["test_acc"] <= 1.0 and summary["test_images"] == 10_000
    assert [r["val_acc"] for r in read_metrics(out / "metrics.csv")] == ["nan"]
    assert "no validation split" in printed.getvalue()


def test_interrupted_promote_resumes_to_the_same_metrics(
        searched: Searched, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    straight, broken = searched.root / "straight", searched.root / "broken"
    # Each time metrics.csv is written, the checkpoint of its last epoch is already there:
    # a kill between the two must never leave the CSV ahead of what a resume finds.
    behind: list[tuple[int, int]] = []
    write_metrics = rundir.write_metrics

    def checked(folder: Path, history: list[dict[str, float]]) -> Path:
        saved = torch.load(folder / rundir.CHECKPOINT, weights_only=True)["epoch"]
        behind.append((int(history[-1]["epoch"]), int(saved)))
        return write_metrics(folder, history)

    monkeypatch.setattr(rundir, "write_metrics", checked)
    # CPU results depend on the thread count: train here with the count of a fresh
    # process, as the runs below have (an earlier test may have changed this one's).
    fresh = int(subprocess.run([sys.executable, "-c", "import torch; "
                                "print(torch.get_num_threads())"],
                               capture_output=True, text=True, check=True).stdout)
    threads = torch.get_num_threads()
    torch.set_num_threads(fresh)
    try:
        assert main(searched.argv(0, *EACH_EPOCH, "--out", str(straight))) == 0
    finally:
        torch.set_num_threads(threads)
    assert behind[:3] == [(1, 1), (2, 2), (3, 3)], behind
    monkeypatch.undo()

    proc = subprocess.Popen([str(SEARCH), *searched.argv(0, *EACH_EPOCH, "--out",
                                                         str(broken))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (broken / "checkpoint.pt").exists():  # written after epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    # A second promote into the folder (this process) is refused, naming the one training.
    capsys.readouterr()
    one_line_error(main(searched.argv(0, *EACH_EPOCH, "--out", str(broken))), capsys,
                   f"{broken}: in use by promote of trial 0 (pid {proc.pid} on ")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted: the last checkpoint" in output
    assert "Traceback" not in output

    again = subprocess.run([str(SEARCH), *searched.argv(0, *EACH_EPOCH, "--out",
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


def test_predict_writes_one_row_per_id(promoted: Path, data: CifarData, predicted: np.ndarray,
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data.test_labels), 400, replace=False)
    ids = rng.permutation(np.arange(5000, 5400))  # not in the images' order
    source = tmp_path / "test.pkl"
    source.write_bytes(pickle.dumps({b"data": data.test_images[pick], b"ids": ids}))
    out = tmp_path / "sub" / "submission.csv"
    assert main(["predict", str(promoted), "--input", str(source), "--out", str(out),
                 "--device", "cpu"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ID", "Labels"]
    # Every row: the id given with the image, and the network's own class for that image
    # with the run's test-time flips (the test set's predictions, computed separately).
    expected = predicted[pick]
    assert [(int(i), int(label)) for i, label in rows[1:]] == \
        list(zip(ids.tolist(), expected.tolist(), strict=True))
    # Preconditions that make the comparison able to fail: shuffled ids would move
    # different classes, and predicting without (or with the other) TTA differs somewhere.
    assert len(set(expected.tolist())) >= 3
    other = predict_logits(load_weights(promoted), data.test_images[pick],
                           tta_flip=not run_tta(promoted)).argmax(1)
    assert (other != expected).any()
    assert "400 rows" in capsys.readouterr().out


def test_predict_reads_an_image_folder(promoted: Path, data: CifarData, predicted: np.ndarray,
                                       tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = rng.permutation(40)  # file name order is not the images' order
    for i, name in enumerate(names):
        Image.fromarray(data.test_images[i]).save(folder / f"img{name:02d}.png")
    out = tmp_path / "folder.csv"
    assert main(["predict", str(promoted / "model.pt"), "--input", str(folder), "--out",
                 str(out), "--device", "cpu"]) == 0
    rows = list(csv.reader(out.open()))[1:]
    expected = {f"img{name:02d}": int(predicted[i]) for i, name in enumerate(names)}
    assert len(set(expected.values())) >= 3
    assert {r[0]: int(r[1]) for r in rows} == expected and len(rows) == 40


def test_evaluate_gives_the_recorded_accuracy_and_a_confusion_png(
        promoted: Path, data: CifarData, predicted: np.ndarray, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Expected from the weights and the test labels, not from what promote recorded.
    accuracy = float(np.mean(predicted == data.test_labels))
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (data.test_labels, predicted), 1)
    for target in (promoted, promoted / "checkpoint.pt"):
        out = tmp_path / target.name
        assert main(["evaluate", str(target), "--data", str(SHARED_ARCHIVE), "--out", str(out),
                     "--device", "cpu"]) == 0
        text = capsys.readouterr().out
        assert f"accuracy {100 * accuracy:.2f}%" in text
        assert "airplane" in text and "most confused with" in text
        result = json.loads((out / "evaluation.json").read_text())
        assert result["accuracy"] == accuracy  # checkpoint: the same (no EMA)
        assert result["tta_flip"] is run_tta(promoted)
        assert np.array_equal(np.array(result["confusion"]), confusion)
        with Image.open(out / "confusion.png") as image:
            assert image.format == "PNG"


def test_promote_on_a_ray_task(searched: Searched, promoted: Path, predicted: np.ndarray,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = searched.root / "ray"
    # CPU kernels sum in another order with another thread count, and Ray gives a one-CPU
    # task one thread unless OMP_NUM_THREADS says otherwise: the thread count used here.
    monkeypatch.setenv("OMP_NUM_THREADS", str(fresh_threads()))  # as `promoted` trained
    code = main(searched.argv(1, "--out", str(out), "--ray-address", "local"))
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).exists(), name
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, promoted))
    # Same seed, same CPU kernels: the same network (one that learned, see `predicted`).
    assert mine["test_acc"] == theirs["test_acc"] > 0.2
    assert mine["per_class_acc"] == theirs["per_class_acc"]
    ray_weights, local_weights = (load_weights(d).state_dict() for d in (out, promoted))
    assert all(torch.equal(ray_weights[k], v) for k, v in local_weights.items())


def test_a_full_disk_during_promote_is_one_line(searched: Searched, tmp_path: Path) -> None:
    """The run folder cannot take the first checkpoint: a real full disk (a 64 KiB tmpfs)
    where this process may mount one, else a real file size limit (EFBIG) on the command."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True).returncode == 0

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death by the signal
        if not mounted:
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    run = disk / "run"
    try:
        result = subprocess.run([str(SEARCH), *searched.argv(0, "--epochs", "1", "--out",
                                                             str(run))],
                                capture_output=True, text=True, timeout=300, preexec_fn=limit)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
    why = "no space left on device" if mounted else "file too large"
    assert result.returncode == 2, result.stdout + result.stderr
    expected = f"search: error: {run}: cannot write the run folder: {why}; "
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr


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
    # Outputs that cannot be written: a directory as the CSV, a file as the folder.
    one_line_error(main(["predict", str(promoted), "--input", "x.pkl", "--out",
                         str(tmp_path)]), capsys, f"--out {tmp_path}: is a directory")
    one_line_error(main(["evaluate", str(promoted), "--data", str(SHARED_ARCHIVE), "--out",
                         str(not_pickle)]), capsys, f"--out {not_pickle}: is a file")
