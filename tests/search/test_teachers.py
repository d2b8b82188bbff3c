"""Fold runs, ensembles and distillation through the CLI: a smoke search, two of its
trial's folds promoted as teachers, their ensemble evaluated and predicted, and a student
distilled from them."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from search.cli import main
from tests.conftest import SHARED_ARCHIVE
from tests.search.smoke import FINAL, Searched, smoke_search
from tests.search.test_promote import load_weights, one_line_error, run_tta
from trainers import CifarData
from trainers.inference import predict_logits

pytestmark = pytest.mark.usefixtures("shared_archive")  # skips, or fails in CI, without it


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    return smoke_search(tmp_path_factory.mktemp("teachers"), "kd", FINAL)


def promote(searched: Searched, *extra: str) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(searched.argv(0, *extra))
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def folds(searched: Searched) -> list[Path]:
    """Trial 0 trained without fold 1 of 10, and without fold 2: two teachers."""
    runs = []
    for k in (1, 2):
        out = searched.root / f"fold{k}"
        code, printed = promote(searched, "--fold", f"{k}/10", "--out", str(out))
        assert code == 0, printed
        assert f"fold {k}/10 held out" in printed
        runs.append(out)
    return runs


@pytest.fixture(scope="module")
def data() -> CifarData:
    from trainers import load_cifar10

    return load_cifar10(SHARED_ARCHIVE)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def member_probs(run: Path, images: np.ndarray) -> np.ndarray:
    return softmax(predict_logits(load_weights(run), images, tta_flip=run_tta(run)))


def test_fold_runs_record_their_fold(folds: list[Path]) -> None:
    for k, run in enumerate(folds, start=1):
        config = json.loads((run / "config.json").read_text())
        assert config["fold"] == f"{k}/10" and config["train"]["fold"] == f"{k}/10"
        assert json.loads((run / "summary.json").read_text())["fold"] == f"{k}/10"
        assert config["budget"] == 40_000


def test_the_ensemble_is_the_mean_of_its_members(folds: list[Path], data: CifarData,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ens"
    assert main(["evaluate", *map(str, folds), "--weights", "3,1", "--out", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    probs = [member_probs(run, data.test_images) for run in folds]
    mean = 0.75 * probs[0] + 0.25 * probs[1]  # computed here, from the weights
    result = json.loads((out / "evaluation.json").read_text())
    assert result["accuracy"] == pytest.approx(float((mean.argmax(1) == data.test_labels).mean()))
    singles = [float((p.argmax(1) == data.test_labels).mean()) for p in probs]
    assert [m["test_acc"] for m in result["models"]] == pytest.approx(singles)
    assert min(singles) > 0.15  # the members learned something, or nothing here could fail
    assert (probs[0].argmax(1) != probs[1].argmax(1)).mean() > 0.05  # and they disagree
    assert result["total_params"] == 2 * 19_954 and result["budget"] == 40_000
    assert not result["over_budget"] and "warning" not in printed
    assert "member 2" in printed and "(ensemble)" in printed
    # A third member passes the study's budget: said plainly, as a teacher.
    assert main(["evaluate", *map(str, folds), str(folds[0] / "model.pt"), "--out",
                 str(tmp_path / "three"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "warning  the ensemble has 59,862 parameters, over the study's budget of 40,000" \
        in printed and "--teacher" in printed


def test_the_ensemble_predicts_the_argmax_of_the_mean(folds: list[Path], data: CifarData,
                                                      tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data.test_labels), 300, replace=False)
    ids = rng.permutation(np.arange(300)) + 1000
    source = tmp_path / "course.pkl"
    source.write_bytes(pickle.dumps({b"data": data.test_images[pick], b"ids": ids}))
    csv_path = tmp_path / "submission.csv"
    assert main(["predict", *map(str, folds), "--input", str(source), "--out", str(csv_path),
                 "--device", "cpu"]) == 0
    rows = list(csv.reader(csv_path.open()))[1:]
    mean = sum(member_probs(run, data.test_images[pick]) for run in folds) / 2
    assert [(int(i), int(label)) for i, label in rows] == \
        list(zip(ids.tolist(), mean.argmax(1).tolist(), strict=True))
    assert len(set(mean.argmax(1).tolist())) >= 3


@pytest.fixture(scope="module")
def student(searched: Searched, folds: list[Path]) -> tuple[Path, str]:
    out = searched.root / "student"
    code, printed = promote(searched, "--teacher", str(folds[0]), "--teacher", str(folds[1]),
                            "--kd-temperature", "3", "--epochs", "1", "--out", str(out))
    assert code == 0, printed
    return out, printed


def test_a_distilled_student_records_its_teachers(student: tuple[Path, str], folds: list[Path],
                                                  data: CifarData) -> None:
    run, printed = student
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["kd_temperature"] == 3 and config["train"]["kd_alpha"] == 0.9
    digests = [hashlib.sha256((f / "model.pt").read_bytes()).hexdigest() for f in folds]
    assert [t["sha256"] for t in config["teachers"]] == digests
    summary = json.loads((run / "summary.json").read_text())
    assert summary["distillation"] == {"alpha": 0.9, "temperature": 3.0, "cached": False}
    teacher_acc = [json.loads((f / "summary.json").read_text())["test_acc"] for f in folds]
    assert [t["test_acc"] for t in summary["teachers"]] == pytest.approx(teacher_acc)
    mean = sum(member_probs(f, data.test_images) for f in folds) / 2
    assert summary["teacher_ensemble_test_acc"] == pytest.approx(
        float((mean.argmax(1) == data.test_labels).mean()))
    assert 0 < summary["test_acc"] <= 1 and summary["n_params"] == 19_954
    assert "teachers 2 run(s), alpha 0.9, temperature 3" in printed
    assert "validation accuracy is optimistic" in printed  # they held out other images


def test_bad_teachers_are_refused(searched: Searched, folds: list[Path],
                                  student: tuple[Path, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    other_data = tmp_path / "other-data"
    shutil.copytree(folds[0], other_data)
    config = json.loads((other_data / "config.json").read_text())
    (other_data / "config.json").write_text(json.dumps({**config, "data_digest": "ab" * 32}))
    out = str(tmp_path / "never")
    one_line_error(promote(searched, "--teacher", str(other_data), "--out", out)[0], capsys,
                   "trained on other data")
    wrong_arch = tmp_path / "wrong-arch"
    shutil.copytree(folds[0], wrong_arch)
    config["arch"]["stem_width"] = 12
    (wrong_arch / "config.json").write_text(json.dumps(config))
    one_line_error(promote(searched, "--teacher", str(wrong_arch), "--out", out)[0], capsys,
                   "do not fit")
    one_line_error(promote(searched, "--teacher", str(tmp_path / "nowhere"), "--out", out)[0],
                   capsys, "no such file")
    one_line_error(promote(searched, "--teacher-cache", "--out", out)[0], capsys,
                   "no --teacher")
    # The student's checkpoint was trained with both folds: another set is refused.
    one_line_error(promote(searched, "--teacher", str(folds[0]), "--kd-temperature", "3",
                           "--epochs", "1", "--out", str(student[0]))[0],
                   capsys, "other teachers", "--restart")
    assert not list(Path(out).glob("*.json")) and not list(Path(out).glob("*.pt"))


def test_a_bad_fold_is_a_usage_error(searched: Searched,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(searched.argv(0, "--fold", "6/5"))
    assert exit_info.value.code == 2
    assert "must be k/K" in capsys.readouterr().err
