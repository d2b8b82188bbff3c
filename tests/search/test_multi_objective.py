"""Multi-objective studies: accuracy against parameters, the Pareto front, promote."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import optuna
import pytest

from search.cli import main
from space import SpecError, load_spec
from tests.conftest import SHARED_ARCHIVE
from tests.search import trainers
from tests.search.test_service import run, smoke_file

pytestmark = pytest.mark.usefixtures("shared_archive")
FINAL = "[final]\nepochs = 1\ntrain_subset = 400\nbatch_size = 64\ntta_flip = false"


def multi_file(tmp_path: Path, objectives: str = '["val_acc", "params"]') -> Path:
    return smoke_file(tmp_path, **{"budget = 40_000 ": f"objectives = {objectives}\n"
                                                       "budget = 40_000 ",
                                   "[final]\nepochs = 2\ntrain_subset = 3000": FINAL})


def test_objectives_are_checked_and_count_in_the_fingerprint(tmp_path: Path) -> None:
    spec = load_spec(multi_file(tmp_path))
    assert spec.objectives == ("val_acc", "params") and spec.multi_objective
    assert spec.fingerprint() != load_spec(smoke_file(tmp_path / "..")).fingerprint()
    for bad, problem in (('["params"]', "must be"), ('["val_acc", "size"]', "must be"),
                         ('["val_acc", "params", "params"]', "must be"),
                         ('["val_acc", "latency"]', "latency_budget_ms"), ('"val_acc"', "list")):
        with pytest.raises(SpecError, match=f"study.objectives.*{problem}"):
            load_spec(multi_file(tmp_path, bad))


def test_a_multi_objective_search_finds_a_front_that_promote_takes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = multi_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'multi.db'}"
    code, out = run(study, url, "front", 10, baselines=False, trainer=trainers.instant)
    assert code == 0, out
    stored = optuna.load_study(study_name="front", storage=url)
    assert [d.name for d in stored.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert stored.metric_names == ["val_acc", "n_params"]
    complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 4
    for t in complete:  # accuracy, then the architecture's parameter count
        assert t.values[1] == t.user_attrs["n_params"]
        assert t.user_attrs["epoch_val_acc"] == [pytest.approx(t.values[0])]
    # Nothing was pruned by the pruner: only over-budget proposals are PRUNED.
    assert all("rejected_reason" in t.user_attrs for t in stored.trials
               if t.state == optuna.trial.TrialState.PRUNED)

    def beaten(t: optuna.trial.FrozenTrial) -> bool:
        return any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                   and o.values != t.values for o in complete)

    front = sorted((t for t in complete if not beaten(t)), key=lambda t: -t.values[0])
    assert 1 <= len(front) < len(complete)  # a real trade-off, some trials dominated
    capsys.readouterr()
    assert main(["best", "--study", str(study), "--storage", url, "--study-name", "front",
                 "--top", "20"]) == 0
    listed = capsys.readouterr().out
    assert f"Pareto front of val_acc vs n_params: {len(front)} trial(s)" in listed
    numbers = [int(line.split()[0]) for line in listed.splitlines()[2:] if line.strip()]
    assert numbers == [t.number for t in front]
    # Any trial of the front can be promoted: the smallest one here.
    smallest = min(front, key=lambda t: t.values[1])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["promote", str(smallest.number), "--study", str(study), "--storage", url,
                     "--study-name", "front", "--data", str(SHARED_ARCHIVE), "--device", "cpu",
                     "--out", str(tmp_path / "run")])
    assert code == 0, printed.getvalue()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_params"] == smallest.values[1] and summary["trial"] == smallest.number


def test_nsga2_searches_a_multi_objective_study_within_the_budget(tmp_path: Path) -> None:
    study = multi_file(tmp_path)
    text = study.read_text().replace('type = "tpe"\nn_startup_trials = 4',
                                     'type = "nsga2"\npopulation_size = 4')
    assert "nsga2" in text
    study.write_text(text)
    assert load_spec(study).sampler == {"type": "nsga2", "population_size": 4, "seed": 0}
    url = f"sqlite:///{tmp_path / 'nsga.db'}"
    code, out = run(study, url, "nsga", 12, baselines=False, trainer=trainers.instant)
    assert code == 0, out
    trials = optuna.load_study(study_name="nsga", storage=url).trials
    # NSGA-II's own bookkeeping: generations of 4, bred from the ones before.
    generations = [t.system_attrs.get("NSGAIISampler:generation") for t in trials]
    assert None not in generations and max(generations) >= 2, generations
    assert all(t.user_attrs["n_params"] <= 40_000 for t in trials
               if t.state == optuna.trial.TrialState.COMPLETE)
    assert not [t for t in trials if "rejected_reason" in t.user_attrs]  # redrawn, not tried
    bad = tmp_path / "bad.toml"  # NSGA-II's options belong to it alone
    bad.write_text(text.replace('type = "nsga2"', 'type = "tpe"'))
    with pytest.raises(SpecError, match=r"sampler\.population_size.*only to nsga2"):
        load_spec(bad)
