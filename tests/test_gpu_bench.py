"""benchmarks/gpu_bench.py: a --quick run on the CPU records every figure, and sane ones."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from models import BASELINES, count_flops, count_params
from tests.conftest import need_shared_archive

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_bench.py"
REQUIRED = ("device", "date", "command", "torch", "net", "study", "train_images", "batch_sizes",
            "matmul_bf16_tflops", "fast", "plain", "speedup", "short_trial_seconds",
            "trials_per_hour", "notes", "plain_tuned", "speedup_over_tuned", "complete",
            "searches")
PATH_KEYS = ("images_per_s", "seconds_per_epoch", "achieved_tflops", "fraction_of_matmul")


@pytest.fixture
def archive() -> Path:
    return need_shared_archive()


@pytest.fixture
def gpu_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports its siblings by name
    return importlib.import_module("gpu_bench")


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


@pytest.mark.timeout(300)
def test_quick_cpu_run_writes_every_figure(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu-cpu.json"
    argv = [str(SCRIPT), "--quick", "--device", "cpu", "--data", str(archive),
            "--search-seconds", "20", "--out", str(out)]
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                            timeout=280, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"saved {out}" in result.stdout
    record = json.loads(out.read_text())

    assert [k for k in REQUIRED if k not in record] == []
    assert record["device"] == "cpu" and record["quick"] is True
    assert record["argv"] == argv and "--quick" in record["command"]
    assert record["notes"] == {}, record["notes"]  # every part measured
    arch = BASELINES[record["net"]["name"]]
    assert record["net"]["params"] == count_params(arch)
    assert record["net"]["train_flops_per_image"] == 3 * count_flops(arch)
    assert record["train_images"] == 512 and record["batch_sizes"]["plain"] == 128
    assert positive(record["matmul_bf16_tflops"]) and positive(record["matmul_fp32_tflops"])
    assert record["complete"] is True and len(record["searches"]) == 1
    for path in ("fast", "plain", "plain_tuned"):
        row = record[path]
        assert all(positive(row[k]) for k in PATH_KEYS), row
        assert 0 < row["fraction_of_matmul"] < 1.5, row
        assert row["achieved_tflops"] == pytest.approx(
            row["images_per_s"] * 3 * count_flops(arch) / 1e12)
    assert positive(record["speedup"])
    assert record["speedup"] == pytest.approx(
        record["fast"]["images_per_s"] / record["plain"]["images_per_s"])
    assert positive(record["short_trial_seconds"])
    assert record["short_trial"]["epochs"] == 2  # the smoke study's middle trial length
    rate = record["trials_per_hour"]
    assert isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate >= 0
    search = record["search"]
    assert 0 <= search["trials_finished"] <= sum(search["trials_by_state"].values())
    assert rate == pytest.approx(search["trials_finished"] / search["wall_seconds"] * 3600)


def test_recipe_is_the_middle_of_the_study_ranges(gpu_bench: ModuleType) -> None:
    name, cfg = gpu_bench.study_recipe("resnet-budget")
    assert name == "resnet-budget"
    assert (cfg.epochs, cfg.batch_size, cfg.cutout, cfg.label_smoothing) == (15, 512, 8, 0.1)
    assert cfg.lr == pytest.approx(math.sqrt(0.02 * 0.4))
    assert cfg.weight_decay == pytest.approx(math.sqrt(1e-4 * 1e-3))
    assert gpu_bench.middle({"low": 1, "high": 9}) == 5
    assert gpu_bench.middle({"low": 0.0, "high": 1.0, "step": 0.25}) == 0.5


def test_quick_study_trains_on_the_quick_images(gpu_bench: ModuleType) -> None:
    text = gpu_bench.study_file("smoke").read_text()
    small = gpu_bench.shrink_study(text, 512, 100)
    assert "train_subset = 512" in small and "val_size = 100" in small
    assert "3000" not in small and "val_size = 1000" not in small
    no_subset = gpu_bench.shrink_study("[study]\nname = 'x'\n\n[train]\nepochs = 1\n", 64, 20)
    assert "[train]\nval_size = 20\ntrain_subset = 64\nepochs = 1" in no_subset
