"""A finished trial of the store back as the configs `search promote` trains: its
architecture and recipe, rebuilt from its parameters by the study file's space, and
the study's full-training recipe (``[final]``) on top."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import optuna

from search import record


class PromoteError(ValueError):
    """Bad input to `search promote` (printed as one line, exit code 2)."""


def find_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number``, which must be COMPLETE."""
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        span = f"0..{len(trials) - 1}" if trials else "none yet"
        raise PromoteError(f"study {study.study_name!r} has no trial {number} "
                           f"(trials: {span})")
    trial = match[0]
    if record.outcome(trial) != "complete":
        why = record.reason(trial) or (f"stopped after epoch {max(trial.intermediate_values)}"
                                       if trial.intermediate_values else "")
        raise PromoteError(f"trial {number} is {trial.state.name}"
                           f"{f' ({why})' if why else ''}, not COMPLETE: only complete "
                           "trials can be promoted (see `search best`)")
    return trial


def trial_configs(spec: Any, trial: optuna.trial.FrozenTrial) -> tuple[Any, Any, list[str]]:
    """The trial's (ArchConfig, TrainConfig), rebuilt from its parameters by the space.

    Where the study file has changed since the trial ran, the configs the trial
    recorded win, with a note saying so.
    """
    from models import ArchConfig, ConfigError
    from trainers import TrainConfig

    stored: dict[str, Any] = {}
    for key, cls in ((record.ARCH, ArchConfig), (record.TRAIN, TrainConfig)):
        try:
            raw = record.stored_config(trial, key)
            stored[key] = cls.from_dict(json.loads(raw)) if isinstance(raw, str) else None
        except (ConfigError, ValueError):  # an older or hand-edited record: rebuild instead
            stored[key] = None
    try:
        fixed = optuna.trial.FixedTrial(dict(trial.params))
        rebuilt = {record.ARCH: spec.sample_arch(fixed), record.TRAIN: spec.sample_train(fixed)}
    except (ValueError, ConfigError) as err:
        if stored[record.ARCH] is None or stored[record.TRAIN] is None:
            raise PromoteError(f"trial {trial.number}'s parameters do not fit {spec.source} "
                               f"({err}) and the trial recorded no configs") from None
        return stored[record.ARCH], stored[record.TRAIN], [
            f"trial {trial.number}'s parameters no longer fit {spec.source}; "
            "using the configs the trial recorded"]
    notes = []
    for key, what in ((record.ARCH, "architecture"), (record.TRAIN, "recipe")):
        if stored[key] is not None and stored[key] != rebuilt[key]:
            notes.append(f"{spec.source} changed since trial {trial.number} ran; using the "
                         f"{what} the trial recorded")
            rebuilt[key] = stored[key]
    return rebuilt[record.ARCH], rebuilt[record.TRAIN], notes


def final_recipe(spec: Any, train: Any, epochs: int | None, **overrides: Any) -> Any:
    """The study's full-training recipe for ``train``, with ``epochs`` and the other
    ``overrides`` (recipe fields; None: keep) if given."""
    from models import ConfigError

    try:
        final = spec.final_train(train)
        given = {key: value for key, value in {"epochs": epochs, **overrides}.items()
                 if value is not None}
        if given:
            final = dataclasses.replace(final, **given)
    except ConfigError as err:
        raise PromoteError(f"the full recipe is invalid: {err}") from None
    return final
