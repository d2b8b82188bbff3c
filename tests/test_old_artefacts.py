"""Artefacts written by release 0.1 still work with the current code.

`tests/fixtures/release-0.1/` holds what commit 7e53da4 wrote (see its README.md):
a smoke study store (8 trials: 4 COMPLETE, 4 PRUNED; trial 3 promoted), the run
folder of trial 3's promotion (a bottleneck network, so its configs carry
`block_type = "bottleneck"` and `expansion`), and a promotion of trial 3 that was
interrupted with Ctrl-C during epoch 2. These tests use the command line and the
documented file formats only; each one fails if an old file can no longer be read.
Every fixture is copied to tmp_path first: promote and report write to the store.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.cli import main
from tests.conftest import SHARED_ARCHIVE

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release-0.1"
STUDY = "smoke"
STATES = {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE",
          4: "PRUNED", 5: "PRUNED", 6: "PRUNED", 7: "PRUNED"}
BY_VAL_ACC = [3, 2, 0, 1]  # the complete trials, best validation accuracy first
N_PARAMS = {0: 19_954, 1: 13_854, 2: 10_500, 3: 6_654, 4: 6_562, 5: 1_190, 6: 8_298,
            7: 7_110}
BOTTLENECK = {1, 3, 4, 5, 6, 7}
PROMOTED_TEST_ACC = {3: 0.2013}  # written to the store by release 0.1's `search promote`


@pytest.fixture(scope="session")
def archive(cifar_jpeg: object) -> Path:
    """The shared CIFAR-10 archive, decoded once per session (`cifar_jpeg`: missing fails
    in CI, as in tests/conftest.py)."""
    return SHARED_ARCHIVE


@pytest.fixture(scope="session")
def data_cache(archive: Path, cifar_cache: Path) -> Path:
    """The session's private $SEARCH_CACHE, which `cifar_jpeg` has filled."""
    return cifar_cache


@pytest.fixture
def data(archive: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The archive to pass as --data, with the private cache in effect."""
    monkeypatch.setenv("SEARCH_CACHE", str(data_cache))
    monkeypatch.delenv("SEARCH_DATA", raising=False)
    return archive


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the old study store, as a storage URL."""
    monkeypatch.delenv("SEARCH_STORAGE", raising=False)
    db = tmp_path / "store" / "study.db"
    db.parent.mkdir()
    shutil.copyfile(FIXTURES / "study.db", db)
    return f"sqlite:///{db}"


def copy_run(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def run_cli(argv: Sequence[object], capsys: pytest.CaptureFixture[str]) -> str:
    """`search ARGV` in this process; its stdout. Fails with stderr on a non-zero exit."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, f"search {' '.join(map(str, argv))} exited {code}: {captured.err}"
    return captured.out


def trial_lines(listing: str) -> dict[int, str]:
    """Trial number -> its line in `search trials` / `search best` output."""
    lines = {}
    for line in listing.splitlines():
        match = re.match(r"\s*(\d+)\s+([A-Z]+)\b", line)
        if match:
            lines[int(match.group(1))] = line
    return lines


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_old_store_trials_carry_readable_architectures(store: str) -> None:
    """Every trial's recorded `arch` JSON (basic and bottleneck) still parses and counts."""
    from models import ArchConfig, count_params

    study = optuna.load_study(study_name=STUDY, storage=store)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert {n: t.state.name for n, t in trials.items()} == STATES
    for number, trial in trials.items():
        raw = json.loads(trial.user_attrs["arch"])
        assert raw["block_type"] == ("bottleneck" if number in BOTTLENECK else "basic")
        assert raw["expansion"] == 4
        arch = ArchConfig.from_dict(raw)
        assert count_params(arch) == trial.user_attrs["n_params"] == N_PARAMS[number]


def test_listing_and_report_read_old_store(store: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    listing = run_cli(["trials", "--study", STUDY, "--storage", store], capsys)
    lines = trial_lines(listing)
    assert {n: line.split()[1] for n, line in lines.items()} == STATES
    assert "resnet-8-half" in lines[0]  # the baseline queued first
    assert f"{100 * PROMOTED_TEST_ACC[3]:.2f}" in lines[3]

    best = run_cli(["best", "--study", STUDY, "--storage", store], capsys)
    assert list(trial_lines(best)) == BY_VAL_ACC
    assert f"{100 * PROMOTED_TEST_ACC[3]:.2f}" in trial_lines(best)[3]

    out = tmp_path / "report"
    text = run_cli(["report", "--study", STUDY, "--storage", store, "--out", out], capsys)
    assert (out / "pareto.png").stat().st_size > 0
    table = (out / "report.md").read_text()
    for number in BY_VAL_ACC:
        assert f"{N_PARAMS[number]:,}" in table, f"trial {number} missing from report.md"
    assert f"{100 * PROMOTED_TEST_ACC[3]:.2f}" in table
    assert f"{N_PARAMS[3]:,}" in text


def test_evaluate_and_predict_old_run(data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The old run folder gives the test accuracy its summary.json recorded."""
    run = copy_run("trial-3", tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tta_flip"] is False and summary["device"] == "cpu"
    text = run_cli(["evaluate", run, "--data", data, "--device", "cpu",
                    "--out", tmp_path / "eval"], capsys)
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    # Same weights, data and TTA setting: the same accuracy. (On the generating machine
    # the closest top-2 logit gap over the 10,000 images was 7e-6, so a CPU with other
    # float kernels could in principle flip one prediction; nothing else may differ.)
    assert abs(evaluation["accuracy"] - summary["test_acc"]) <= 1e-9
    assert evaluation["confusion"] == summary["confusion"]
    assert f"{100 * summary['test_acc']:.2f}%" in text

    from trainers import load_cifar10

    test_images = load_cifar10(data).test_images[:200]  # from the private cache
    pkl = tmp_path / "test200.pkl"
    pkl.write_bytes(pickle.dumps({b"data": np.ascontiguousarray(test_images),
                                  b"ids": np.arange(200, dtype=np.int64)}))
    csv_out = tmp_path / "submission.csv"
    run_cli(["predict", run, "--input", pkl, "--out", csv_out, "--device", "cpu"], capsys)
    # release 0.1's own `search predict` on the same 200 images
    assert csv_out.read_text() == (run / "predictions-test200.csv").read_text()


@pytest.mark.parametrize("name", ["trial-3/model.pt", "trial-3/checkpoint.pt",
                                  "trial-3/checkpoint.prev.pt",
                                  "trial-3-interrupted/checkpoint.pt"])
def test_inference_loader_rebuilds_old_model(name: str, tmp_path: Path) -> None:
    from trainers.checkpoint import read_checkpoint
    from trainers.inference import load_model

    folder = copy_run(name.split("/")[0], tmp_path)
    path = folder / name.split("/")[1]
    if path.name == "model.pt":
        stored = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = read_checkpoint(path)
        assert state["ema"] is None  # the recipe has no EMA: "model" holds the weights
        stored = state["model"]
    loaded = load_model(path, "cpu")
    rebuilt = loaded.model.state_dict()
    assert list(rebuilt) == list(stored)
    for key, value in stored.items():
        assert rebuilt[key].shape == value.shape, key
        assert torch.equal(rebuilt[key], value), key
    assert sum(p.numel() for p in loaded.model.parameters()) == N_PARAMS[3]
    assert json.loads((FIXTURES / "trial-3" / "summary.json").read_text())["n_params"] \
        == N_PARAMS[3]
    if path.name == "model.pt":  # the final weights are the last checkpoint's
        last = load_model(folder / "checkpoint.pt", "cpu").model.state_dict()
        assert all(torch.equal(last[k], v) for k, v in rebuilt.items())


def test_resume_interrupted_promote(store: str, data: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A promote stopped by Ctrl-C in epoch 2 continues from epoch 1's checkpoint: the old
    trial's parameters replay through today's space into the checkpoint's architecture
    (a bottleneck with `expansion`, which is no trial parameter), and the result goes
    back to the old store."""
    run = copy_run("trial-3-interrupted", tmp_path)
    old_rows = read_metrics(run / "metrics.csv")
    assert [row["epoch"] for row in old_rows] == ["1"]
    text = run_cli(["promote", 3, "--study", STUDY, "--storage", store, "--data", data,
                    "--device", "cpu", "--epochs", 2, "--out", run], capsys)
    assert re.search(r"resum\w*\b.*\bepoch 1\b", text), text
    rows = read_metrics(run / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0] == old_rows[0]  # epoch 1 from the checkpoint, not trained again
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["resumed_from"] == 1
    assert summary["n_params"] == N_PARAMS[3]
    # The result went back to the old trial, where `trials` and `best` show it.
    attrs = optuna.load_study(study_name=STUDY, storage=store).trials[3].user_attrs
    assert attrs["promoted_run_dir"] == str(run.resolve())  # not the fixture's old path
    assert attrs["promoted_test_acc"] == round(summary["test_acc"], 4)
    shown = f"(promoted: test {100 * attrs['promoted_test_acc']:.2f}%)"
    for command in ("trials", "best"):
        listing = run_cli([command, "--study", STUDY, "--storage", store], capsys)
        assert shown in trial_lines(listing)[3]


MEMORY_FIXTURE = FIXTURES.parent / "memory-budget-2026-12-03"


def test_memory_budget_study_of_2026_12_03_resumes(tmp_path: Path) -> None:
    """The release of 2026-12-03 (commit edf534c) measured an unset `memory_batch` at 512
    images; this one at the recipe's batch size (256 in this file), which changes the
    space's fingerprint. A study that release started resumes, saying so; another space
    is still refused."""
    from search.args import UsageError
    from search.run import SPACE_FINGERPRINT, check_space
    from space import load_spec

    shutil.copytree(MEMORY_FIXTURE, tmp_path / "old")
    url = f"sqlite:///{tmp_path / 'old' / 'study.db'}"
    spec = load_spec(tmp_path / "old" / "smoke-memory.toml")
    study = optuna.load_study(study_name="smoke-memory", storage=url)
    old = study.user_attrs[SPACE_FINGERPRINT]
    assert spec.memory_images == 256 and old != spec.fingerprint()

    text = (tmp_path / "old" / "smoke-memory.toml").read_text()
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace("budget = 40_000", "budget = 30_000", 1))
    with pytest.raises(UsageError, match="another space or budget"):
        check_space(study, load_spec(changed), allow_change=False, out=io.StringIO())

    out = io.StringIO()
    check_space(study, spec, allow_change=False, out=out)
    assert "earlier trials were measured at 512" in out.getvalue()
    assert "256 images" in out.getvalue()
    reloaded = optuna.load_study(study_name="smoke-memory", storage=url)
    assert reloaded.user_attrs[SPACE_FINGERPRINT] == spec.fingerprint()
    out = io.StringIO()
    check_space(reloaded, spec, allow_change=False, out=out)  # now it is this release's
    assert out.getvalue() == ""
