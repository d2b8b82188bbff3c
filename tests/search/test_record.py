"""The trial record: one rule for "best", "finished" and the one-line description."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from search import record


def _study(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study(directions=record.DIRECTIONS)
    for t in trials:
        study.add_trial(t)
    return study


def _complete(value: float, **attrs: object) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, value=value, user_attrs=dict(attrs),
                        params={"x": 1}, distributions={"x": IntDistribution(0, 2)},
                        intermediate_values={1: value})


def test_best_ranks_finite_values_and_breaks_ties_by_the_earlier_trial() -> None:
    study = _study(_complete(0.5), _complete(0.9), _complete(-math.inf), _complete(0.9),
                   _complete(math.inf), _complete(0.7),
                   create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.99}))
    ranked = record.best(study.get_trials())
    assert [t.number for t in ranked] == [1, 3, 5, 0]  # -inf, inf and the pruned one left out
    assert [t.number for t in record.best(study.get_trials(), 2)] == [1, 3]
    assert record.best([]) == []


def test_finished_counts_own_failures_but_not_bugs_or_dead_workers() -> None:
    study = _study(
        _complete(0.5),
        create_trial(state=TrialState.PRUNED),
        create_trial(state=TrialState.FAIL, user_attrs={record.FAIL_REASON: "TrainingDiverged"}),
        create_trial(state=TrialState.FAIL, user_attrs={record.ERROR: "TypeError: x"}),
        create_trial(state=TrialState.FAIL),  # a dead worker's, failed by its heartbeat
        create_trial(state=TrialState.RUNNING),
    )
    trials = study.get_trials()
    assert [record.finished(t) for t in trials] == [True, True, True, False, False, False]
    assert record.count_finished(trials) == (3, 1)


def test_outcome_tells_over_budget_proposals_from_pruned_trials() -> None:
    study = _study(create_trial(state=TrialState.PRUNED,
                                user_attrs={record.REJECTED_REASON: "too big", "n_params": 9}),
                   create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.3}))
    assert [record.outcome(t) for t in study.get_trials()] == ["over budget", "pruned"]


def test_describe_reads_the_record_and_survives_odd_attributes() -> None:
    study = _study(
        _complete(0.8123, n_params=1_234_567, arch_summary="basic s16k3 | 1x16k3 | sc1 | avg",
                  baseline="resnet-20", promoted_test_acc=0.9312),
        create_trial(state=TrialState.FAIL, user_attrs={"n_params": "many", "fail_reason":
                                                        "TrainingDiverged: NaN"}),
    )
    good, odd = (record.describe(t) for t in study.get_trials())
    assert good.split()[:5] == ["0", "COMPLETE", "1", "0.8123", "1.23M"]
    assert "(promoted: test 93.12%) [resnet-20] basic s16k3" in good
    assert odd.split()[:5] == ["1", "FAIL", "0", "-", "-"]
    assert odd.endswith("TrainingDiverged: NaN")


def test_report_epoch_writes_the_objective_and_the_speed() -> None:
    study = optuna.create_study(directions=record.DIRECTIONS)
    trial = study.ask()
    record.report_epoch(trial, 1, {"val_acc": 0.25, "val_loss": 2.0, "seconds": 1.23456,
                                   "images_per_s": 100.04})
    frozen = study.get_trials()[0]
    assert frozen.intermediate_values == {1: 0.25}
    assert frozen.user_attrs[record.SECONDS_PER_EPOCH] == 1.235
    assert frozen.user_attrs[record.IMAGES_PER_S] == 100.0
