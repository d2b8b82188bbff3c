"""The trial record: what a search trial writes to the store, and how it is read back.

One module owns the names of a trial's user attributes, the study's objective and
its direction, what counts as a finished trial, which trial is best, and the one
line that describes a trial. The worker writes through it; the live view,
``search trials``/``best``/``report`` and ``promote`` read through it, so a
renamed attribute or a new objective is a change here only.

Readers are forgiving: a trial made by hand, by older code or by a crashed
worker may lack any attribute or hold a value of the wrong type, and then reads
as missing rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from optuna.trial import FrozenTrial, TrialState

# -- attribute names (user attributes of a trial) ---------------------------------------

N_PARAMS = "n_params"  # trainable parameters of the trial's architecture
REJECTED_REASON = "rejected_reason"  # set on a proposal over the budget (pruned, untrained)
REJECTED_BUDGET = "rejected_budget"  # which budget it broke: parameters, flops, latency_ms, ...
COSTS = "costs"  # every budget's cost, as far as measured (latency, memory: measured ones)
FLOPS = "flops"  # forward FLOPs at 32x32
ARCH = "arch"  # ArchConfig as JSON
ARCH_SUMMARY = "arch_summary"  # ArchConfig.describe()
TRAIN = "train"  # TrainConfig as JSON
DEVICE = "device"  # the device's name
HOST = "host"
WORKER = "worker"  # index of the worker among the search's workers
PID = "pid"
DATA_SOURCE = "data_source"  # path of the data set it trained on
SECONDS_PER_EPOCH = "seconds_per_epoch"  # of the last epoch
IMAGES_PER_S = "images_per_s"  # training throughput of the last epoch
VAL_LOSS = "val_loss"  # of the last epoch
FAIL_REASON = "fail_reason"  # a failure of the trial's own; the trial counts as finished
ERROR = "error"  # a bug (not the trial's own failure) and where its traceback is; not counted
BASELINE = "baseline"  # name of the registry baseline the trial was queued as
PROMOTED_TEST_ACC = "promoted_test_acc"  # written by `search promote`
PROMOTED_RUN_DIR = "promoted_run_dir"
PROMOTED_EPOCHS = "promoted_epochs"

MAX_REASON = 500  # characters of a failure reason kept on the trial


# -- the objective ------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """One value a trial reports: the key in `trainers.fit`'s epoch metrics, and whether
    larger is better."""

    metric: str  # key of the epoch metrics, e.g. "val_acc"
    direction: Literal["maximize", "minimize"]
    label: str  # for people: column headers, plot axes

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


OBJECTIVE = Objective("val_acc", "maximize", "validation accuracy")
OBJECTIVES: tuple[Objective, ...] = (OBJECTIVE,)
DIRECTIONS: list[Literal["maximize", "minimize"]] = [o.direction for o in OBJECTIVES]
# The second (and third) objectives of a multi-objective study (`[study] objectives`):
# the size costs the accuracy is traded against, all minimised, from the candidate.
SIZE_OBJECTIVES = {"params": Objective("n_params", "minimize", "parameters"),
                   "flops": Objective("flops", "minimize", "FLOPs"),
                   "latency": Objective("latency_ms", "minimize", "latency (ms)")}
EPOCH_VAL_ACC = "epoch_val_acc"  # multi-objective trials: the objective after each epoch


def objectives(names: Iterable[str]) -> tuple[Objective, ...]:
    """The study's objectives for its ``[study] objectives`` names (the first is
    ``val_acc``)."""
    return (OBJECTIVE, *(SIZE_OBJECTIVES[name] for name in list(names)[1:]))


def directions(names: Iterable[str]) -> list[Literal["maximize", "minimize"]]:
    return [o.direction for o in objectives(names)]


def objective_values(val_acc: float, candidate: Any, names: Iterable[str]) -> tuple[float, ...]:
    """What a trial returns: its accuracy, then each size objective's cost."""
    costs = {"params": float(candidate.n_params), "flops": float(candidate.flops),
             "latency": float(getattr(candidate, "costs", {}).get("latency_ms", math.nan))}
    return (val_acc, *(costs[name] for name in list(names)[1:]))


# -- writing --------------------------------------------------------------------------------


def candidate_attrs(candidate: Any, *, device: str, host: str, worker: int, pid: int,
                    data_source: str) -> dict[str, Any]:
    """What a trial records about itself once its candidate fits the budget."""
    return {
        N_PARAMS: candidate.n_params, FLOPS: candidate.flops,
        **({COSTS: dict(candidate.costs)} if getattr(candidate, "costs", None) else {}),
        ARCH_SUMMARY: candidate.arch.describe(),
        DEVICE: device, HOST: host, WORKER: worker, PID: pid, DATA_SOURCE: data_source,
    }


def rejected_attrs(err: Any) -> dict[str, Any]:
    """What a proposal over a budget (`space.OverBudget`) records: its size, which budget
    it broke and why, and its costs as far as they were taken."""
    return {N_PARAMS: err.n_params, REJECTED_REASON: str(err),
            REJECTED_BUDGET: getattr(err, "name", "parameters"),
            COSTS: dict(getattr(err, "costs", {}))}


def write_constraints(trial: Any, budgets: Iterable[Any], costs: Mapping[str, float]) -> None:
    """Each costed budget as an Optuna constraint (`trial.set_constraint`, Optuna >= 5:
    the relative excess over the limit, <= 0 within), so that constraint-aware samplers,
    `study.best_trial` and the dashboard see which trials are feasible."""
    if not hasattr(trial, "set_constraint"):
        return
    from space.budgets import excess

    for budget in budgets:
        if budget.name in costs:
            trial.set_constraint(budget.name, excess(budget, costs[budget.name]))


def write_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def write_configs(trial: Any, candidate: Any) -> None:
    """The trained architecture and recipe as JSON, in the trial's system attributes:
    promote and warm starts read them, and the dashboard, which shows user attributes
    as one line each, does not stretch a trial's page with them (its note has the
    architecture as a table)."""
    for key, value in ((ARCH, candidate.arch.to_json()), (TRAIN, candidate.train.to_json())):
        trial.storage.set_trial_system_attr(trial._trial_id, key, value)


def stored_config(trial: FrozenTrial, key: str) -> str | None:
    """`ARCH` or `TRAIN` as recorded: in the system attributes, or in the user attributes
    where stores of releases before 0.2 keep them."""
    value = trial.system_attrs.get(key, trial.user_attrs.get(key))
    return value if isinstance(value, str) else None


def report_epoch(trial: Any, epoch: int, metrics: Mapping[str, float],
                 multi: bool = False) -> None:
    """The objective's value after ``epoch`` (what the pruner judges), and the epoch's
    speed and loss. Optuna takes no intermediate values in a multi-objective study
    (``multi``): there they go to a user attribute, and nothing is pruned."""
    value = float(metrics[OBJECTIVE.metric])
    if multi:
        seen = list(trial.user_attrs.get(EPOCH_VAL_ACC, []))
        write_attrs(trial, {EPOCH_VAL_ACC: [*seen[:epoch - 1], round(value, 6)]})
    else:
        trial.report(value, epoch)
    write_attrs(trial, {SECONDS_PER_EPOCH: round(metrics["seconds"], 3),
                        IMAGES_PER_S: round(metrics["images_per_s"], 1),
                        VAL_LOSS: round(metrics["val_loss"], 4)})


def failure_reason(err: BaseException) -> str:
    """``Type: first line of the message``, as kept on the trial."""
    text = str(err)
    first = text.splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}"[:MAX_REASON]


def write_failure(trial: Any, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason[:MAX_REASON])


def promoted_attrs(summary: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """What `search promote` writes back to the trial."""
    return {PROMOTED_TEST_ACC: round(float(summary["test_acc"]), 4),
            PROMOTED_RUN_DIR: run_dir, PROMOTED_EPOCHS: summary["epochs"]}


# -- reading -------------------------------------------------------------------------------


def int_attr(trial: FrozenTrial, key: str) -> int | None:
    value = trial.user_attrs.get(key)
    # bool is an int to Python; hand-made or older trials may hold anything here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def float_attr(trial: FrozenTrial, key: str) -> float | None:
    value = trial.user_attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def str_attr(trial: FrozenTrial, key: str) -> str | None:
    value = trial.user_attrs.get(key)
    return value if isinstance(value, str) and value else None


def value(trial: FrozenTrial) -> float | None:
    """The objective's final value of a complete trial; None if absent or not finite."""
    if trial.state != TrialState.COMPLETE or trial.values is None:
        return None
    v = trial.values[0]
    return v if v is not None and math.isfinite(v) else None


def best_epoch_value(trial: FrozenTrial) -> float | None:
    """The best finite value any epoch reported (pruned trials have only these)."""
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if not values:
        return None
    return max(values) if OBJECTIVE.direction == "maximize" else min(values)


def last_epoch_value(trial: FrozenTrial) -> float | None:
    if not trial.intermediate_values:
        return None
    v = trial.intermediate_values[max(trial.intermediate_values)]
    return v if math.isfinite(v) else None


def reason(trial: FrozenTrial) -> str | None:
    """Why a trial stopped short, if recorded: over the budget, its own failure, or a bug."""
    return (str_attr(trial, REJECTED_REASON) or str_attr(trial, FAIL_REASON)
            or str_attr(trial, ERROR))


def over_budget(trial: FrozenTrial) -> bool:
    """A proposal rejected before training (PRUNED in the store, with a reason)."""
    return trial.state == TrialState.PRUNED and REJECTED_REASON in trial.user_attrs


def finished(trial: FrozenTrial) -> bool:
    """Counts toward a search's ``n_trials``: complete, pruned, or failed for a reason of
    its own (divergence, out of memory, bad data).

    A trial failed by a dead worker's heartbeat, an interrupt or a bug in the code
    does not count: its parameters run again, or the search stops.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs


def count_finished(trials: Iterable[FrozenTrial]) -> tuple[int, int]:
    """(finished, running) among ``trials``."""
    done = running = 0
    for t in trials:
        done += finished(t)
        running += t.state == TrialState.RUNNING
    return done, running


PLATEAU_MIN_TRIALS = 30  # complete trials before `plateau` judges
PLATEAU_EPSILON = 0.001  # an improvement smaller than this (0.1 points) does not count


def plateau(trials: Iterable[FrozenTrial]) -> str | None:
    """A stopping hint, or None: when none of the latest complete trials (the last third,
    at least 20) raised the best by `PLATEAU_EPSILON`, more trials are unlikely to help
    much. A heuristic beside Optuna's terminator (`search.stopping`): it says the search
    has stalled, not how far the best is from the optimum."""
    done = sorted((t for t in trials if value(t) is not None), key=lambda t: t.number)
    if len(done) < PLATEAU_MIN_TRIALS:
        return None
    window = max(20, len(done) // 3)
    sign = 1.0 if OBJECTIVE.direction == "maximize" else -1.0
    before = max(sign * value(t) for t in done[:-window])  # type: ignore[operator]
    latest = max(sign * value(t) for t in done[-window:])  # type: ignore[operator]
    if latest - before > PLATEAU_EPSILON:
        return None
    return (f"no improvement over {PLATEAU_EPSILON * 100:g} points of {OBJECTIVE.metric} in "
            f"the last {window} complete trials: more trials are unlikely to help much "
            "(a heuristic; widen the space, lengthen the trials, or stop)")


def pareto_front(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials of a multi-objective study that no other complete trial beats on
    every objective (accuracy up, sizes down), most accurate first."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
            and all(v is not None and math.isfinite(v) for v in t.values)]
    signs = [1.0] + [-1.0] * (max((len(t.values) for t in done), default=1) - 1)

    def key(t: FrozenTrial) -> list[float]:  # larger is better on every axis
        return [sign * v for sign, v in zip(signs, t.values, strict=False)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    keys = {t.number: key(t) for t in done}
    front = [t for t in done if not any(dominates(keys[o.number], keys[t.number])
                                        for o in done)]
    return sorted(front, key=lambda t: (-t.values[0], t.number))


def best(trials: Iterable[FrozenTrial], k: int | None = None) -> list[FrozenTrial]:
    """Complete trials with a finite value, best first; ties go to the earlier trial.

    The one rule for "best" everywhere: the live view, ``search best``, the run's
    summary, ``search report``.
    """
    sign = -1.0 if OBJECTIVE.direction == "maximize" else 1.0
    ranked = sorted(((v, t) for t in trials if (v := value(t)) is not None),
                    key=lambda vt: (sign * vt[0], vt[1].number))
    chosen = [t for _, t in ranked]
    return chosen if k is None else chosen[:k]


OUTCOMES = ("complete", "pruned", "over budget", "failed", "running", "waiting")


def outcome(trial: FrozenTrial) -> str:
    """What happened to a trial, in `OUTCOMES`: over-budget proposals are PRUNED in the
    store but say something else about the search (about the space, not the pruner)."""
    if trial.state == TrialState.PRUNED:
        return "over budget" if over_budget(trial) else "pruned"
    if trial.state == TrialState.FAIL:
        return "failed"
    return trial.state.name.lower()


def fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


# Above `describe` lines; `search best`, which lists complete trials only, prints
# COLUMNS + "architecture".
COLUMNS = f"{'trial':>5} {'state':<8} {'epoch':>5} {'val_acc':>8} {'params':>7}  "
HEADER = COLUMNS + "architecture / reason"


def cells(trial: FrozenTrial) -> tuple[str, str, str, str, str, str]:
    """A trial's row: number, state, epochs (of the recipe's, while running), accuracy,
    size, architecture or reason."""
    acc = value(trial)
    if acc is None:
        acc = last_epoch_value(trial)
    acc_text = f"{acc:.4f}" if acc is not None else "-"
    tail = reason(trial) or str_attr(trial, ARCH_SUMMARY) or ""
    baseline = str_attr(trial, BASELINE)
    if baseline:
        tail = f"[{baseline}] {tail}"
    test = float_attr(trial, PROMOTED_TEST_ACC)
    if test is not None:  # `search promote` trained it in full
        tail = f"(promoted: test {100 * test:.2f}%) {tail}"
    epochs = str(epochs_done(trial))
    if trial.state == TrialState.RUNNING and (total := trial_epochs(trial)) is not None:
        epochs = f"{epochs}/{total}"
    return (str(trial.number), trial.state.name, epochs, acc_text,
            fmt_params(int_attr(trial, N_PARAMS)), tail)


def describe(trial: FrozenTrial) -> str:
    """One line per trial: number, state, epochs, accuracy, size, architecture or reason."""
    number, state, epochs, acc, params, tail = cells(trial)
    return f"{number:>5} {state:<8} {epochs:>5} {acc:>8} {params:>7}  {tail[:70]}"


def epochs_done(trial: FrozenTrial) -> int:
    """Epochs reported so far (a multi-objective trial keeps them in a user attribute)."""
    seen = trial.user_attrs.get(EPOCH_VAL_ACC)
    return len(trial.intermediate_values) or (len(seen) if isinstance(seen, list) else 0)


def trial_epochs(trial: FrozenTrial) -> int | None:
    """The epochs the trial's recipe trains, where it recorded its recipe."""
    import json

    raw = stored_config(trial, TRAIN)
    try:
        return int(json.loads(raw)["epochs"]) if raw else None
    except (ValueError, KeyError, TypeError):
        return None
