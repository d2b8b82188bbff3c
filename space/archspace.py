"""The ``[arch]`` table of a study file: keys, trial parameters and their meaning.

One table of `ArchKey` rows says, for each key, its type, default and check, how
its value is read from an `ArchConfig` and where it goes in the config's dict
form. Both directions walk that table: `ArchSpace.sample` (trial -> config) and
`ArchSpace.params` (config -> trial parameters, the inverse that promotion and
warm starts replay). Block types and their settings come from the registry
(`models.blocks`): each setting of a registered block is a key, drawn only in
trials whose block type has it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from models.blocks import BLOCKS, block_from_dict, check_block_type
from models.config import BRANCH_DROPS, DEFAULT_BLOCK, ArchConfig, StageConfig
from models.shapes import feature_sizes, stage_stride
from models.validate import ConfigError, field_types
from space.dims import Dim, SpecError, Suggester, config_check, parse_dim

MAX_STAGES = 6  # 32 -> 1 pixel after five stride-2 stages
MAX_COMBOS = 10_000  # block-setting combinations checked against every width
# Network keys drawn only when another key is not at a value: key -> (other, value).
CONDITIONAL = {"branch_drop_rate": ("branch_drop", "none")}
# Keys added after study fingerprints began (release of issue 13): a study file that
# leaves them at their defaults keeps the fingerprint it had (`StudySpec.fingerprint`).
LATER_KEYS = ("groups", "shake_backward", "shake_image", "branch_drop", "branch_drop_rate")

Draft = dict[str, Any]  # an `ArchConfig.to_dict` in the making


@dataclass(frozen=True)
class ArchKey:
    """One key of ``[arch]`` and the trial parameter(s) it makes.

    ``read(arch, i)`` gives the key's value in ``arch`` (``i``: stage index for
    per-stage keys); ``write(draft, i, value)`` puts it into the dict form.
    """

    key: str
    tp: Any
    default: Any  # None: the study file must give the key
    check: Callable[[Any], None]
    read: Callable[[ArchConfig, int], Any]
    write: Callable[[Draft, int, Any], None]
    per_stage: bool = False  # one parameter per stage: stage<i>_<key>
    block_types: tuple[str, ...] = ()  # only drawn when the block type is one of these
    unless: tuple[str, Any] | None = None  # (key, value): not drawn where key has value

    def applies(self, draft: Draft) -> bool:
        if self.unless is not None and draft.get(self.unless[0]) == self.unless[1]:
            return False
        return not self.block_types or draft["block"]["type"] in self.block_types

    def condition(self, drawn: Collection[str] | None = None) -> str:
        """When the key is drawn; ``drawn``: the block types the study may draw."""
        if self.per_stage:
            return "per stage"
        if self.unless is not None:
            return f"if {self.unless[0]} != {self.unless[1]}"
        if self.block_types:
            types = tuple(t for t in self.block_types if drawn is None or t in drawn) or \
                self.block_types
            return f"if block_type = {types[0]}" if len(types) == 1 else \
                f"if block_type in {{{', '.join(types)}}}"
        return ""


def _check_stages(value: int) -> None:
    if not 1 <= value <= MAX_STAGES:
        raise ConfigError("stages", value, f"must be in 1..{MAX_STAGES}")


def _check_pool_grid(value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ConfigError("pool_grid", value, "must be a power of two (1 = global pooling)")


def _write_stages(draft: Draft, _: int, n: int) -> None:
    draft["stages"] = [{"stride": stage_stride(i)} for i in range(n)]


def _read_pool_grid(arch: ArchConfig, _: int) -> int:
    final = arch.feature_sizes()[-1]
    return 1 if arch.pool_kernel is None else final // arch.pool_kernel


def _write_pool_grid(draft: Draft, _: int, grid: int) -> None:
    final = feature_sizes(s["stride"] for s in draft["stages"])[-1]
    draft["pool_kernel"] = None if grid == 1 else final // grid


def _stage_key(key: str, tp: Any, default: Any) -> ArchKey:
    def write(draft: Draft, i: int, value: Any) -> None:
        draft["stages"][i][key] = value

    return ArchKey(key, tp, default,
                   config_check(lambda **kw: StageConfig(**{"blocks": 1, "width": 64, **kw}), key),
                   lambda arch, i: getattr(arch.stages[i], key), write, per_stage=True)


def _network_key(key: str, tp: Any, default: Any) -> ArchKey:
    def write(draft: Draft, _: int, value: Any) -> None:
        draft[key] = value

    unless = CONDITIONAL.get(key)
    # A conditional key is checked where it is drawn: with its condition's key at another
    # value (the first other one ArchConfig accepts).
    context: dict[str, Any] = {} if unless is None else {unless[0]: next(
        v for v in BRANCH_DROPS if v != unless[1])}
    return ArchKey(key, tp, default,
                   config_check(lambda **kw: ArchConfig(stages=(StageConfig(1, 64),),
                                                        **context, **kw), key),
                   lambda arch, _: getattr(arch, key), write, unless=unless)


def _block_type_key() -> ArchKey:
    def write(draft: Draft, _: int, value: str) -> None:
        draft["block"] = {"type": value}

    def check(value: str) -> None:
        check_block_type("block_type", value)

    return ArchKey("block_type", str, DEFAULT_BLOCK.name, check,
                   lambda arch, _: arch.block.name, write)


def _block_setting_key(key: str) -> ArchKey:
    types = tuple(name for name, cls in BLOCKS.items() if key in field_types(cls))
    first = BLOCKS[types[0]]

    def write(draft: Draft, _: int, value: Any) -> None:
        draft["block"][key] = value

    def check(value: Any) -> None:
        for name in types:
            try:
                block_from_dict("block", {"type": name, key: value})
            except ConfigError as err:
                raise ConfigError(key, value, err.problem) from None

    default = first.__dataclass_fields__[key].default
    return ArchKey(key, field_types(first)[key], default, check,
                   lambda arch, _: getattr(arch.block, key), write, block_types=types)


def arch_keys() -> tuple[ArchKey, tuple[ArchKey, ...], tuple[ArchKey, ...], tuple[ArchKey, ...]]:
    """(stages, per-stage keys, network keys in walking order, all keys in file order)."""
    stages = ArchKey("stages", int, None, _check_stages, lambda arch, _: len(arch.stages),
                     _write_stages)
    stage_defaults = {f.name: f.default for f in dataclasses.fields(StageConfig)}
    per_stage = tuple(_stage_key(k, int, None if k != "kernel" else stage_defaults[k])
                      for k in ("blocks", "width", "kernel"))
    network: list[ArchKey] = []
    for f in dataclasses.fields(ArchConfig):
        if f.name == "block":
            network.append(_block_type_key())
            settings = dict.fromkeys(k for cls in BLOCKS.values() for k in field_types(cls))
            network += [_block_setting_key(k) for k in settings]
        elif f.name not in ("stages", "pool_kernel"):  # pool_kernel comes from pool_grid
            network.append(_network_key(f.name, field_types(ArchConfig)[f.name], f.default))
    network.append(ArchKey("pool_grid", int, 1, _check_pool_grid, _read_pool_grid,
                           _write_pool_grid))
    return stages, per_stage, tuple(network), (stages, *per_stage, *network)


class ArchSpace:
    """The parsed ``[arch]`` table: one `Dim` per key, and the walk over them."""

    def __init__(self, dims: dict[str, Dim]) -> None:
        self.dims = dims
        self._stages, self._per_stage, self._network, self.keys = arch_keys()

    def _walk(self, value_of: Callable[[ArchKey, str, int], Any]) -> Draft:
        """The dict form of a config, each key's value from ``value_of(key, name, i)``."""
        draft: Draft = {}
        self._stages.write(draft, 0, value_of(self._stages, "stages", 0))
        for i in range(len(draft["stages"])):
            for row in self._per_stage:
                row.write(draft, i, value_of(row, f"stage{i + 1}_{row.key}", i))
        for row in self._network:
            if row.applies(draft):
                row.write(draft, 0, value_of(row, row.key, 0))
        return draft

    def sample(self, trial: Suggester) -> ArchConfig:
        """Draw an architecture; parameters are named ``stages``, ``stage2_width``, ..."""
        return ArchConfig.from_dict(
            self._walk(lambda row, name, _: self.dims[row.key].suggest(trial, name)))

    def params(self, arch: ArchConfig) -> dict[str, Any]:
        """Trial parameters that make `sample` return ``arch``; ValueError if none do."""
        params: dict[str, Any] = {}

        def value_of(row: ArchKey, name: str, i: int) -> Any:
            value = row.read(arch, i)
            dim = self.dims[row.key]
            if not dim.contains(value):
                raise ValueError(f"{name}={value!r} is outside arch.{row.key} {dim.describe()}")
            if not dim.fixed:
                params[name] = value
            return value

        rebuilt = ArchConfig.from_dict(self._walk(value_of))
        if rebuilt != arch:
            where, mine, made = _difference(arch.to_dict(), rebuilt.to_dict())
            raise ValueError(f"{where}={mine!r} cannot be made by this space, which makes "
                             f"{made!r} there")
        return params

    def rows(self) -> Iterator[tuple[str, Dim, str]]:
        """(arch.key, dim, condition) for display."""
        drawn = set(self.dims["block_type"].values())
        for row in self.keys:
            yield f"arch.{row.key}", self.dims[row.key], row.condition(drawn)


def _difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """The first place where two `to_dict` forms differ: (dotted path, a's value, b's)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if a.get(key) != b.get(key):
                return _difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _difference(x, y, f"{where}[{i}]")
    return where, a, b


def parse_arch(where: str, table: dict[str, Any]) -> ArchSpace:
    """Validate a study file's ``[arch]`` table; `SpecError` names the key and problem."""
    keys = arch_keys()[3]
    known = [row.key for row in keys]
    for key in table:
        if key not in known:
            raise SpecError(f"{where}: arch.{key}: unknown key (known: {', '.join(known)})")
    for row in keys:
        if row.default is None and row.key not in table:
            raise SpecError(f"{where}: arch.{row.key}: required key is missing")
    dims = {row.key: parse_dim(where, f"arch.{row.key}", table.get(row.key, row.default),
                               row.tp, row.check) for row in keys}
    deepest = max(dims["stages"].values())
    smallest = feature_sizes(stage_stride(i) for i in range(deepest))[-1]
    too_big = [g for g in dims["pool_grid"].extremes() if g > smallest]
    if too_big:
        raise SpecError(
            f"{where}: arch.pool_grid: {too_big[0]} is larger than the {smallest}x{smallest} "
            f"final feature map of a {deepest}-stage network")
    _check_block_widths(where, dims)
    rate = dims["branch_drop_rate"]
    if set(dims["branch_drop"].values()) - {"none"} and 0.0 in rate.extremes():
        raise SpecError(f"{where}: arch.branch_drop_rate: a rate of 0 drops nothing; give a "
                        "rate above 0 for the branch_drop methods drawn")
    return ArchSpace(dims)


def _check_block_widths(where: str, dims: dict[str, Dim]) -> None:
    """Every width must suit every block a trial may draw (bottleneck: expansion divides it)."""
    for name in dims["block_type"].values():
        settings = list(field_types(BLOCKS[name]))
        ranges = [_some_values(dims[k]) for k in settings]
        for values in itertools.islice(itertools.product(*ranges), MAX_COMBOS):
            chosen = dict(zip(settings, values, strict=True))
            try:
                block = block_from_dict("block", {"type": name, **chosen})
            except ConfigError as err:  # settings valid alone, not together
                key = err.field.removeprefix("block.")
                raise SpecError(f"{where}: arch.{key}: {err.problem}, got {err.value!r} "
                                f"(for {name} blocks with {chosen})") from None
            for width in dims["width"].values():
                problem = block.check_width(width)
                if problem is not None:
                    raise SpecError(f"{where}: arch.width: {width} {problem}")


def _some_values(dim: Dim) -> list[Any]:
    """Every value of a small discrete dimension, else the extremes."""
    if dim.kind == "float" or (dim.kind == "int" and len(range(
            int(dim.low or 0), int(dim.high or 0) + 1, int(dim.step or 1))) > MAX_COMBOS):
        return dim.extremes()
    return dim.values()
