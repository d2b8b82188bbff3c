"""The first run that fits the machine: a CPU search says what a trial costs there, and
`make run` picks the CPU-sized study on a machine without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from models import BASELINES
from search.estimate import SLOW_TRIAL_S, TrialCost, first_candidate, trial_cost
from space import load_spec
from tests.search.test_service import run, smoke_file

REPO = Path(__file__).resolve().parents[2]


def test_the_first_candidate_is_the_first_queued_trial() -> None:
    spec = load_spec("smoke")
    study = optuna.create_study(direction="maximize")
    arch = BASELINES["resnet-8-half"]
    study.enqueue_trial(spec.arch_params(arch))
    assert first_candidate(spec, study).arch == arch
    # Without a queued trial: the space's first proposal within the budget.
    fresh = first_candidate(spec, optuna.create_study())
    assert fresh is not None and fresh.n_params <= spec.budget


def test_the_estimate_counts_the_trials_steps() -> None:
    spec = load_spec("cpu-small")
    cost = trial_cost(spec, optuna.create_study(), 50_000)
    assert cost is not None
    assert cost.steps == 5000 // 128 * 4  # 39 whole batches a epoch, 4 epochs
    assert cost.step_s > 0 and cost.step_s * cost.steps < cost.trial_s < 2 * cost.step_s * \
        cost.steps


@pytest.mark.parametrize(("seconds", "said", "hint"), [
    (40.0, "about 40 s", False), (600.0, "about 10 min", True), (38_760.0, "about 10.8 h", True)])
def test_the_line_says_minutes_or_hours_and_points_at_the_cpu_study(
        seconds: float, said: str, hint: bool) -> None:
    line = TrialCost("net", 1.0, 100, seconds).describe("cpu-small")
    assert said in line and "a GPU takes seconds" in line
    assert ("search run --study cpu-small" in line) == hint == (seconds > SLOW_TRIAL_S)


def test_a_cpu_search_says_what_a_trial_costs_first(tmp_path: Path) -> None:
    code, printed = run(smoke_file(tmp_path), f"sqlite:///{tmp_path / 'study.db'}", "cost", 1)
    assert code == 0, printed
    lines = printed.splitlines()
    cost = [i for i, line in enumerate(lines) if line.startswith("cost     about one trial "
                                                                   "on this CPU: about ")]
    start = [i for i, line in enumerate(lines) if line.startswith("trials   0 of 1")]
    assert cost and start and cost[0] < start[0], printed  # before the first trial


def test_make_run_picks_the_cpu_study_without_a_gpu() -> None:
    import torch

    result = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    expected = "resnet-budget" if torch.cuda.is_available() else "cpu-small"
    assert f"search run --study {expected} " in result.stdout, result.stdout
