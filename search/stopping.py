"""When to stop a search: Optuna's regret bound against the statistical error of the
accuracy it is judged on.

Optuna's terminator (Makarova et al., "Automatic termination for hyperparameter
optimization", 2022; `optuna.terminator.RegretBoundEvaluator`) fits a Gaussian process
to the better half of the complete trials and bounds the regret of the best one: how
far its validation accuracy may lie below the best this space holds (the largest
upper confidence bound over the space minus the largest lower confidence bound over the
trials). More trials are unlikely to help once that bound is within the statistical
error of the accuracy itself. The paper takes the standard deviation of a
cross-validated score; a trial here measures one accuracy on ``n`` held-out images, so
the error is its binomial standard error, sqrt(p (1 - p) / n). The Gaussian process
needs scipy; without it only the plateau heuristic (`search.record.plateau`) speaks.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from search import record
from trainers.config import parse_fold

MIN_TRIALS = 20  # complete trials before the bound is estimated (Optuna's minimum)
CIFAR10_TRAIN = 50_000  # training images a fold is cut from, when the recipe has no subset


@dataclass(frozen=True)
class Verdict:
    """The regret bound of a study's best trial and the error it is compared with, both
    in accuracy (a fraction, as val_acc)."""

    bound: float
    error: float
    complete: int  # complete trials the bound was estimated from
    val_images: int  # held-out images the best trial's accuracy was measured on

    @property
    def stop(self) -> bool:
        return self.bound <= self.error

    def line(self) -> str:
        return (f"bound {100 * self.bound:.2f} points of {record.OBJECTIVE.metric} (Optuna's "
                f"estimate, from a Gaussian process over {self.complete} complete trials, of "
                "how far the best may lie below the best this space holds; not a guarantee); "
                f"the statistical error of an accuracy on {self.val_images:,} validation "
                f"images: {100 * self.error:.2f} points")

    def hint(self) -> str | None:
        if not self.stop:
            return None
        return ("the regret bound is within the statistical error of the accuracy: more "
                "trials are unlikely to find a better network (Optuna's terminator); "
                "widen the space, lengthen the trials, or stop")


def available() -> bool:
    """Whether the Gaussian process can be fitted (it needs scipy)."""
    return importlib.util.find_spec("scipy") is not None


def validation_images(trial: FrozenTrial) -> int | None:
    """The held-out images the trial's accuracy was measured on, from its recorded
    recipe: ``val_size``, or one fold of ``train_subset`` (else CIFAR-10's 50,000)
    images; None without a recipe or a validation split."""
    raw = record.stored_config(trial, record.TRAIN)
    try:
        train = json.loads(raw) if raw else None
        if not isinstance(train, dict):
            return None
        if fold := parse_fold(str(train.get("fold") or "")):
            return int(train.get("train_subset") or CIFAR10_TRAIN) // fold[1]
        return int(train.get("val_size") or 0) or None
    except (ValueError, TypeError):
        return None


def accuracy_error(p: float, images: int) -> float:
    """The binomial standard error of an accuracy ``p`` measured on ``images`` images."""
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / images)


def verdict(trials: Iterable[FrozenTrial], seed: int = 0) -> Verdict | None:
    """The regret bound of the best complete trial of a single-objective study and the
    statistical error of its accuracy; None without scipy, with fewer than `MIN_TRIALS`
    complete trials, without a validation split, or where the trials share no parameter
    (the bound is fitted on the parameters every trial has)."""
    if not available():
        return None
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and len(t.values) == 1 and math.isfinite(t.values[0])]
    if len(complete) < MIN_TRIALS:
        return None
    best = max(complete, key=lambda t: t.values[0])
    images = validation_images(best)
    if images is None:
        return None
    import optuna
    from optuna.terminator import RegretBoundEvaluator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            bound = RegretBoundEvaluator(seed=seed).evaluate(
                complete, optuna.study.StudyDirection.MAXIMIZE)
        except (ValueError, RuntimeError, ArithmeticError):  # no parameter that every
            return None  # trial has, or a fit that failed: no bound, the search goes on
    return Verdict(max(0.0, float(bound)), accuracy_error(best.values[0], images),
                   len(complete), images)


def lines(trials: list[FrozenTrial]) -> list[str]:
    """What `search best` and the end of `search run` print about stopping: the regret
    bound where it can be estimated, and a ``stop?`` line where it, or the plateau
    heuristic, judges that more trials are unlikely to help."""
    out = []
    judged = verdict(trials)
    if judged is not None:
        out.append(f"regret   {judged.line()}")
        if (hint := judged.hint()) is not None:
            out.append(f"stop?    {hint}")
    if (stalled := record.plateau(trials)) is not None:
        out.append(f"stop?    {stalled}")
    return out
