"""Checking plain data (parsed JSON or TOML) against a frozen config dataclass.

`ArchConfig` and `TrainConfig` are both rebuilt from dictionaries that came from
files, the study store or a checkpoint. This module turns such a dictionary into
constructor keyword arguments, naming the field and the value for anything wrong.
Value ranges are checked by the dataclasses themselves (``__post_init__``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot describe a network or a training run.

    Attributes:
        field: dotted name of the offending field, e.g. ``"stages[1].width"``.
        value: the value that was rejected.
    """

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {problem}, got {value!r}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_type(field: str, value: Any, tp: Any) -> Any:
    """Return ``value`` if it is an instance of the annotation ``tp``.

    Supports ``int``, ``float`` (an ``int`` is accepted and converted), ``bool``,
    ``str`` and unions of these with ``None``. ``bool`` is never accepted as a
    number, since ``True`` for a width is always a mistake.
    """
    options = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(_type_name(o) for o in options)
    raise ConfigError(field, value, f"must be {expected}")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a dataclass's fields, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def kwargs_from_dict(
    cls: type, data: Any, *, prefix: str = "", skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Type-checked constructor arguments for dataclass ``cls`` from a mapping.

    Unknown keys are refused; missing keys are left to the dataclass defaults (a
    missing required field is reported by name). Fields named in ``skip`` are
    passed through unchecked for the caller to convert.
    """
    where = prefix.rstrip(".") or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(where, data, "must be a mapping of field names to values")
    types_ = field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}", data[unknown[0]],
            f"unknown field (known: {', '.join(types_)})",
        )
    required = [
        f.name for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for name in required:
        if name not in data:
            raise ConfigError(f"{prefix}{name}", None, "is required")
    return {
        name: value if name in skip else check_type(f"{prefix}{name}", value, types_[name])
        for name, value in data.items()
    }
