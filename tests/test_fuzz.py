"""Seeded fuzzing of what users hand the command line: study files, data sets, predict inputs.

Each case is a real file made by mutating a real input (the built-in study files; tiny
CIFAR-10 archives and course pickles built from the shared JPEGs) and goes through
`search.cli.main` in-process, as a user would run it. Every case must end in one of:

* exit code 2 and exactly one ``search: error: `` line on stderr that names the file
  (``search data`` may print progress lines before it); or
* exit code 0 when the mutation happened to leave the input valid (counted, and
  asserted to be a small minority).

Never an uncaught exception, never a hang (pytest-timeout), never a file written outside
the test's tmp folder, and never a pickle's code run. The seeds are fixed, so a failure
reproduces. The figures are printed at the end of the module (``pytest -s``) and written
as JSON to ``$SEARCH_FUZZ_REPORT`` when it is set.
"""

from __future__ import annotations

import copy
import datetime
import gzip
import io
import json
import math
import os
import pickle
import random
import re
import subprocess
import sys
import tarfile
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from search.cli import main
from tests.conftest import SHARED_ARCHIVE
from trainers.data import CLASSES, TEST_BATCH, TRAIN_BATCHES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SEED = 0
REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "space" / "studies"
TOKEN = "fuzz-escape-5f1c"  # in the name of everything a hostile input tries to write
REPORT_ENV = "SEARCH_FUZZ_REPORT"
N_STUDY_TEXT = 260  # text-level mutations of the built-in study files
N_STUDY_STRUCT = 180  # structure-level mutations, written back with `dump_toml`
N_RANDOM_DATA = 60  # random mutations of each archive form, after one of every kind
SAMPLE_EVERY = 12  # also dry-run every N-th study case (and every one that loads)


# --- the outcome of one case ------------------------------------------------------


@dataclass
class Tally:
    """What the cases of one kind of input ended in."""

    cases: int = 0
    exit_2: int = 0  # refused with one line naming the file
    exit_0: int = 0  # the mutation left the input valid
    failures: int = 0  # anything else: a traceback, a bad message, a hang
    seconds: float = 0.0
    slowest_s: float = 0.0
    slowest_case: str = ""


TALLIES: dict[str, Tally] = {}
SAMPLE = " --sample"  # kind suffix of dry runs of study files already counted as cases
CONTEXT: dict[str, str] = {}  # goes into the report as it is


@pytest.fixture(scope="module", autouse=True)
def fuzz_report() -> Iterator[None]:
    """Print the figures after the module and write them to $SEARCH_FUZZ_REPORT."""
    TALLIES.clear()
    start = time.perf_counter()
    yield
    cases = [t for kind, t in TALLIES.items() if not kind.endswith(SAMPLE)]
    summary = {
        "seed": SEED,
        "cases": sum(t.cases for t in cases),
        "exit_2": sum(t.exit_2 for t in cases),
        "exit_0_still_valid": sum(t.exit_0 for t in cases),
        "failures": sum(t.failures for t in TALLIES.values()),
        "sample_runs": sum(t.cases for kind, t in TALLIES.items() if kind.endswith(SAMPLE)),
        "seconds": round(time.perf_counter() - start, 2),
        "python": sys.version.split()[0],
        **CONTEXT,
        "by_kind": {kind: {**asdict(t), "seconds": round(t.seconds, 3),
                           "slowest_s": round(t.slowest_s, 3)}
                    for kind, t in sorted(TALLIES.items())},
    }
    print(f"\nfuzz summary (seed {SEED}): {summary['cases']} cases, {summary['exit_2']} exit 2, "
          f"{summary['exit_0_still_valid']} exit 0 (still valid), {summary['failures']} failures, "
          f"{summary['sample_runs']} dry runs (--sample 5), {summary['seconds']} s")
    for kind, t in sorted(TALLIES.items()):
        print(f"  {kind:<24} {t.cases:>4} runs  {t.exit_2:>4} exit 2  {t.exit_0:>3} exit 0  "
              f"{t.seconds:6.2f} s  slowest {t.slowest_s:.2f} s ({t.slowest_case})")
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


@dataclass
class Runner:
    """Runs cases through `main` and judges each; failures are collected, not raised."""

    capsys: pytest.CaptureFixture[str]
    failures: list[str] = field(default_factory=list)

    def __call__(self, kind: str, label: str, argv: list[str], path: Path, *,
                 must_fail: bool = False, progress: bool = False) -> int | None:
        """Run ``argv``; ``path`` is the input the error line must name.

        ``must_fail``: exit 0 is a failure too (the input is invalid by design).
        ``progress``: the command prints progress lines on stderr before any error.
        """
        tally = TALLIES.setdefault(kind, Tally())
        start = time.perf_counter()
        code: int | None
        try:
            code = main(argv)
        except (Exception, SystemExit) as err:  # never KeyboardInterrupt or pytest's timeout
            code = None
            raised = "".join(traceback.format_exception_only(type(err), err)).strip()
            where = traceback.extract_tb(err.__traceback__)[-1]
            raised = f"{raised[:300]} (at {Path(where.filename).name}:{where.lineno})"
        seconds = time.perf_counter() - start
        _, stderr = self.capsys.readouterr()
        problem = (f"raised {raised}" if code is None else
                   _judge(code, stderr, path, must_fail=must_fail, progress=progress))
        tally.cases += 1
        tally.seconds += seconds
        if seconds > tally.slowest_s:
            tally.slowest_s, tally.slowest_case = seconds, label
        if problem:
            tally.failures += 1
            self.failures.append(f"{kind} {label}: {problem}\n    argv: {argv}\n"
                                 f"    stderr: {stderr[-400:]!r}")
        elif code == 0:
            tally.exit_0 += 1
        else:
            tally.exit_2 += 1
        return code

    def check(self) -> None:
        shown = "\n".join(self.failures[:12])
        assert not self.failures, f"{len(self.failures)} failing cases, the first:\n{shown}"


def _judge(code: int, stderr: str, path: Path, *, must_fail: bool, progress: bool) -> str:
    """What is wrong with an outcome, or "" if nothing."""
    if "Traceback" in stderr:
        return "a traceback on stderr"
    if code == 0:
        return "accepted an input that must be refused" if must_fail else ""
    if code != 2:
        return f"exit code {code}"
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("search: error: ")]
    if len(errors) != 1 or lines[-1] != errors[0] or (not progress and len(lines) != 1):
        return f"{len(lines)} stderr lines, {len(errors)} of them 'search: error: '"
    if str(path) not in errors[0]:
        return "the error line does not name the file"
    return ""


# --- nothing written outside the test's tmp folder --------------------------------

_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
# The checkout may be shared with people editing it, so only files that could come from
# these inputs count there: anything with TOKEN in its name, and the kinds written here.
_OURS = re.compile(rf"{TOKEN}|\.(npz|csv|png|jpe?g|pkl)$|^(data_batch_\d|test_batch|batches\.meta)")


def _tree(root: Path) -> dict[str, int]:
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in names:
            try:
                files[os.path.join(folder, name)] = os.lstat(os.path.join(folder, name)).st_mtime_ns
            except OSError:  # removed while walking
                pass
    return files


@dataclass
class Sandbox:
    """A working folder under tmp_path as the CWD, a private cache, and a snapshot.

    The snapshot covers the checkout and /tmp; ``$SEARCH_CACHE`` keeps the user's cache
    out of reach (the data test checks that the decoded arrays went to the private one).
    """

    root: Path
    repo: dict[str, int] = field(default_factory=dict)
    tmp: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.repo = _tree(REPO)
        self.tmp = set(os.listdir("/tmp"))

    def check(self) -> None:
        work = self.root / "work"
        assert sorted(p.name for p in work.iterdir()) == [], "files appeared in the CWD"
        after = _tree(REPO)
        changed = sorted(p for p, t in after.items() if self.repo.get(p) != t
                         and _OURS.search(os.path.basename(p)))
        assert not changed, f"files written in the checkout: {changed[:5]}"
        new_tmp = sorted(n for n in set(os.listdir("/tmp")) - self.tmp if TOKEN in n)
        assert not new_tmp, f"files written in /tmp: {new_tmp}"
        escaped = list(self.root.rglob(f"*{TOKEN}*"))
        assert not escaped, f"a hostile input wrote {escaped[:5]}"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    (tmp_path / "work").mkdir()
    (tmp_path / "inputs").mkdir()
    (tmp_path / "markers").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("SEARCH_CACHE", str(tmp_path / "cache"))
    return Sandbox(tmp_path)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(capsys)


# --- study files: text-level mutations --------------------------------------------

BASE_STUDIES = {name: (STUDIES / f"{name}.toml").read_text(encoding="utf-8")
                for name in ("smoke", "resnet-budget")}
NUMBER = re.compile(r"(?<![\w.\"-])[-+]?\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
WEIRD_NUMBERS = (
    "100000000000000000000000000000", "-1", "-99999999999", "0", "1.5", "-0.0", "nan", "inf",
    "-inf", "1e400", "5e-324", '"12"', "true", "0x7fffffffffffffff", "0b101", "1979-05-27",
    "9223372036854775808", "1" * 5000, "[]", "{}", "[1, 2]", "{ low = 1, high = 2 }",
)
JUNK_CHARS = "=[]{}\",.#'\\ \n0123456789-_+abcxyzé\x00\x7f\t\u2028\u00a0"
ADD_LINES = (
    "foo = 1", "stages = 3", "[extra]", "budget = -5", 'type = "grid"', "low = 1", "= 1",
    "[arch]", "epochs = { low = 1 }", 'name = "bad name!"', "x.y.z = 1", "arch.stages = 1",
    "[[pruner]]", "[study.sub]", '"" = 1', "width = [8, 8]", "seed = -1", "dropout = 1.0",
)
KEY_LINE = re.compile(r"^([A-Za-z_][\w-]*)(\s*=)")
HEADER = re.compile(r"^\[([\w-]+)\]")


def _content(lines: list[str]) -> list[int]:
    """Lines that say something: not blank, not only a comment."""
    return [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]


def _pick_line(rng: random.Random, text: str) -> tuple[list[str], int]:
    lines = text.split("\n")
    return lines, rng.choice(_content(lines) or [0])


def t_delete_line(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    del lines[i]
    return "\n".join(lines)


def t_duplicate_line(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "\n".join(lines)


def t_swap_lines(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    _, j = _pick_line(rng, text)
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def t_flip_char(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    line = lines[i].split(" #")[0]
    k = rng.randrange(max(1, len(line)))
    lines[i] = line[:k] + rng.choice(JUNK_CHARS) + line[k + 1:]
    return "\n".join(lines)


def t_truncate(rng: random.Random, text: str) -> str:
    return text[:rng.randrange(len(text))] if text else text


def t_insert_junk(rng: random.Random, text: str) -> str:
    k = rng.randrange(len(text) + 1)
    return text[:k] + "".join(rng.choice(JUNK_CHARS) for _ in range(rng.randint(1, 12))) + text[k:]


def t_replace_number(rng: random.Random, text: str) -> str:
    found = list(NUMBER.finditer(text))
    if not found:
        return t_insert_junk(rng, text)
    m = rng.choice(found)
    return text[:m.start()] + rng.choice(WEIRD_NUMBERS) + text[m.end():]


def t_list_to_table(rng: random.Random, text: str) -> str:
    found = list(re.finditer(r"=\s*(\[[^\[\]\n]*\])", text))
    if not found:
        return t_insert_junk(rng, text)
    m = rng.choice(found)
    inner = m.group(1)[1:-1]
    table = rng.choice(["{ low = 1, high = 2 }", "{ a = 1 }", "{}", "{ low = 0 }",
                        "{ " + inner + " }", "{ low = 3, high = 1 }"])
    return text[:m.start(1)] + table + text[m.end(1):]


def t_table_to_list(rng: random.Random, text: str) -> str:
    found = list(re.finditer(r"=\s*(\{[^{}\n]*\})", text))
    if not found:
        return t_insert_junk(rng, text)
    m = rng.choice(found)
    values = re.findall(r"=\s*([^,}]+)", m.group(1))
    listed = rng.choice(["[]", "[" + m.group(1)[1:-1] + "]", "[" + m.group(1) + "]",
                         "[" + ", ".join(v.strip() for v in values) + ", true]"])
    return text[:m.start(1)] + listed + text[m.end(1):]


def t_nest_deep(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    key = KEY_LINE.match(lines[i])
    depth = rng.choice([2, 40, 400, 3000, 20_000])
    value = ("{ a = " * depth + "1" + " }" * depth) if rng.random() < 0.5 else \
        ("[" * depth + "1" + "]" * depth)
    lines[i] = f"{key.group(1) if key else 'deep'} = {value}"
    return "\n".join(lines)


def t_rename_key(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    keyed = [i for i in range(len(lines)) if KEY_LINE.match(lines[i])]
    if not keyed:  # an earlier mutation of the chain left no key
        return text
    i = rng.choice(keyed)
    key = KEY_LINE.match(lines[i]).group(1)
    new = rng.choice([key + "x", key.upper(), key[:-1], f'"{key} "', key + ".low", "_" + key])
    lines[i] = new + lines[i][len(key):]
    return "\n".join(lines)


def t_rename_section(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    headers = [i for i in range(len(lines)) if HEADER.match(lines[i])]
    if not headers:  # an earlier mutation of the chain left no section header
        return text
    i = rng.choice(headers)
    name = HEADER.match(lines[i]).group(1)
    lines[i] = rng.choice([f"[{name}x]", f"[{name}.sub]", f"[[{name}]]", "[]", f"[{name.upper()}]",
                           "[study]", f"[{name}", f"{name}]", "[data]"])
    return "\n".join(lines)


def t_long_line(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    lines.insert(i, rng.choice([
        f'description = "{"x" * 200_000}"', "x" * 100_000, f"{'k' * 50_000} = 1",
        "width = [" + ", ".join(["8"] * 20_000) + "]", "blocks = " + "9" * 4000,
    ]))
    return "\n".join(lines)


def t_line_endings(rng: random.Random, text: str) -> str:
    return rng.choice([text.replace("\n", "\r"), text.replace("\n", "\n\x0c"),
                       text.replace("=", "=\n"), text.replace("\n", "\r\n").replace("[", "\r[")])


def t_add_line(rng: random.Random, text: str) -> str:
    lines, i = _pick_line(rng, text)
    lines.insert(i + 1, rng.choice(ADD_LINES))
    return "\n".join(lines)


TEXT_OPS: tuple[Callable[[random.Random, str], str], ...] = (
    t_delete_line, t_duplicate_line, t_swap_lines, t_flip_char, t_truncate, t_insert_junk,
    t_replace_number, t_replace_number, t_list_to_table, t_table_to_list, t_nest_deep,
    t_rename_key, t_rename_section, t_long_line, t_line_endings, t_add_line,
)


def as_bytes(rng: random.Random, text: str) -> bytes:
    """The text encoded, with invalid UTF-8, NULs, a BOM or another encoding."""
    data = text.encode("utf-8")
    k = rng.randrange(len(data) + 1)
    kind = rng.randrange(5)
    if kind == 0:
        bad = rng.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88"])
        return data[:k] + bad + data[k:]
    if kind == 1:
        return data[:k] + b"\x00" * rng.randint(1, 4) + data[k:]
    if kind == 2:
        return b"\xef\xbb\xbf" + data
    if kind == 3:
        return text.encode(rng.choice(["utf-16", "utf-32", "latin-1"]), errors="replace") + b"\xe9"
    flipped = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def mutate_text(rng: random.Random) -> tuple[str, str | bytes]:
    name = rng.choice(sorted(BASE_STUDIES))
    text: str | bytes = BASE_STUDIES[name]
    ops = [rng.choice(TEXT_OPS) for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))]
    for op in ops:
        text = op(rng, text)
    label = f"{name}:{'+'.join(op.__name__[2:] for op in ops)}"
    if rng.random() < 0.15:
        return label + "+bytes", as_bytes(rng, text)
    return label, text


# --- study files: structure-level mutations and a tiny TOML writer ---------------


def dump_toml(doc: dict[str, Any]) -> str:
    """TOML for ``doc``: top-level values first, then one ``[table]`` per dict."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_key(name)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    escaped = "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}"
                      if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
    return f'"{escaped}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


SECTIONS = ("study", "arch", "train", "final", "sampler", "pruner")
WRONG_VALUES: tuple[Any, ...] = (
    "text", "", True, False, 1.5, -1, 0, 10**30, -(10**30), 2**63, math.nan, math.inf,
    -math.inf, -0.0, 5e-324, [], {}, [1, "a"], [[1, 2]], [{"low": 1}], {"low": 1}, {"a": 1},
    {"low": 3, "high": 1}, {"low": 1, "high": 2, "step": 0}, {"low": 0.0, "high": 1.0, "log": True},
    datetime.date(1979, 5, 27), datetime.time(7, 32), "x\ny", "\x00", "x" * 20_000,
    list(range(1, 3000)), [math.nan, 1.0], [1, 1],
)
INT_KEYS = ("arch.expansion", "arch.pool_grid", "arch.blocks", "arch.width", "arch.stem_width",
            "arch.stages", "arch.kernel", "arch.shortcut_kernel", "train.epochs",
            "train.batch_size", "train.cutout", "train.train_subset", "train.val_size",
            "train.seed", "train.crop_padding", "final.epochs")
HUGE_RANGES: tuple[Any, ...] = (
    {"low": 1, "high": 10**12}, {"low": 1, "high": 2**40}, {"low": 1, "high": 10**30, "log": True},
    {"low": 2**39, "high": 2**40, "step": 2**39}, 10**12, [1, 10**12], {"low": -(2**40), "high": 1},
)
FLOAT_KEYS = ("train.lr", "train.momentum", "train.weight_decay", "train.warmup_epochs",
              "train.label_smoothing", "train.mixup", "train.cutmix", "train.ema",
              "arch.se_ratio", "arch.dropout", "final.lr")
FLOAT_RANGES: tuple[Any, ...] = (
    {"low": 0.01, "high": 0.2, "step": 1e-300}, {"low": 5e-324, "high": 0.1, "log": True},
    {"low": math.nan, "high": 0.1}, {"low": 0.1, "high": math.inf}, {"low": -math.inf, "high": 0.1},
    {"low": 0.0, "high": 0.5, "step": 0.0}, {"low": 0.2, "high": 0.1},
    {"low": 0.1, "high": 0.2, "log": "yes"}, {"low": 0.1, "high": 0.2, "step": 0.05, "log": True},
    {"low": 0.1}, {"low": 0.1, "high": 0.2, "steps": 1}, [math.nan, 0.1], [0.1, 0.1], [],
    [0.1, "0.2"], {"low": 0.01, "high": 0.2, "step": -0.1}, 1e308, -1e-300,
)
ODD_KEYS = ("depth", "learning_rate", "", " ", "a b", "x\ny", "日本", "__class__", "low",
            "Stages", "stage1_width", "n_trials", "pool_kernel", "\u2028", "type\r")
STRING_KEYS = ("study.name", "study.description", "arch.block_type", "arch.pool",
               "train.optimizer", "train.schedule", "sampler.type", "pruner.type")
ODD_STRINGS: tuple[Any, ...] = ("", " ", "x\ny", "smoke\n", "a/b", "../x", "\x00", "BASIC", "sgd ",
                                "日本", "x" * 10_000, ["basic", "basic"], ["basic", "triangle"], 7)
BAD_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sampler", {"type": "grid"}), ("sampler", {"type": "random", "n_startup_trials": 5}),
    ("sampler", {"group": True, "multivariate": False}), ("sampler", {"seed": 2**40}),
    ("sampler", {"seed": -1}), ("sampler", {"max_draws": 0}),
    ("sampler", {"n_startup_trials": 0, "n_ei_candidates": 10**20}),
    ("sampler", {"n_startup_trials": 0, "n_ei_candidates": 10**9}),
    ("sampler", {"budget_aware": "yes"}), ("sampler", {"type": "TPE"}),
    ("pruner", {"type": "hyperband", "min_resource": "auto"}),
    ("pruner", {"type": "hyperband", "min_resource": 5, "max_resource": 2}),
    ("pruner", {"type": "percentile", "percentile": 101.0}),
    ("pruner", {"type": "percentile", "percentile": math.nan}),
    ("pruner", {"type": "median", "reduction_factor": 3}),
    ("pruner", {"type": "successive_halving", "max_resource": 5}),
    ("pruner", {"type": "none", "n_startup_trials": 1}),
    ("pruner", {"type": "hyperband", "reduction_factor": 1}),
    ("pruner", {"min_resource": 0}), ("pruner", {"type": 3}),
)
CONFLICTS: tuple[tuple[str, Any], ...] = (
    ("train.warmup_epochs", 5.0), ("arch.width", [8, 12]), ("arch.pool_grid", [1, 2, 4, 8]),
    ("final.epochs", [1, 2]), ("final.warmup_epochs", 1000.0), ("final.batch_size", 0),
    ("arch.stages", {"low": 0, "high": 7}), ("arch.stages", 7), ("train.epochs", 0),
    ("arch.expansion", 3), ("arch.pool_grid", {"low": 1, "high": 4}), ("arch.kernel", [3, 4]),
    ("study.budget", 0), ("study.n_trials", -3), ("arch.shortcut_pool", [True, True]),
)


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    table = doc.setdefault(section, {})
    if not isinstance(table, dict):
        doc[section] = table = {}
    table[key] = value


def s_wrong_value(rng: random.Random, doc: dict[str, Any]) -> None:
    section = rng.choice([s for s in SECTIONS if doc.get(s)])
    key = rng.choice(sorted(doc[section]))
    doc[section][key] = copy.deepcopy(rng.choice(WRONG_VALUES))


def s_huge_range(rng: random.Random, doc: dict[str, Any]) -> None:
    _set(doc, rng.choice(INT_KEYS), copy.deepcopy(rng.choice(HUGE_RANGES)))


def s_float_range(rng: random.Random, doc: dict[str, Any]) -> None:
    _set(doc, rng.choice(FLOAT_KEYS), copy.deepcopy(rng.choice(FLOAT_RANGES)))


def s_unknown_key(rng: random.Random, doc: dict[str, Any]) -> None:
    _set(doc, rng.choice(SECTIONS) + ".x", 1)
    table = next(t for t in doc.values() if isinstance(t, dict) and t.get("x") == 1)
    table[rng.choice(ODD_KEYS)] = table.pop("x")


def s_unknown_section(rng: random.Random, doc: dict[str, Any]) -> None:
    name = rng.choice(("data", "Arch", "", "x\ny", "studies", "search", "budget"))
    doc[name] = rng.choice([{"a": 1}, {}, 5, "x"])


def s_section_type(rng: random.Random, doc: dict[str, Any]) -> None:
    doc[rng.choice(SECTIONS)] = rng.choice([3, "x", [1, 2], [{"a": 1}], True])


def s_drop(rng: random.Random, doc: dict[str, Any]) -> None:
    choice = rng.randrange(4)
    if choice == 0 or not doc.get("arch"):
        doc.pop("arch", None)
    elif choice == 1:
        doc["arch"].pop(rng.choice(["stages", "blocks", "width"]), None)
    elif choice == 2:
        doc["arch"] = {k: v for k, v in doc["arch"].items() if rng.random() < 0.3}
    else:
        doc.pop(rng.choice(SECTIONS), None)
        doc.setdefault("arch", {})["stages"] = rng.choice([[], {}, "2"])


def s_bad_option(rng: random.Random, doc: dict[str, Any]) -> None:
    section, options = rng.choice(BAD_OPTIONS)
    if rng.random() < 0.5 or not isinstance(doc.get(section), dict):
        doc[section] = dict(options)
    else:
        doc[section].update(options)


def s_bad_string(rng: random.Random, doc: dict[str, Any]) -> None:
    _set(doc, rng.choice(STRING_KEYS), copy.deepcopy(rng.choice(ODD_STRINGS)))


def s_conflict(rng: random.Random, doc: dict[str, Any]) -> None:
    dotted, value = rng.choice(CONFLICTS)
    if dotted == "arch.width":
        _set(doc, "arch.block_type", "bottleneck")
        _set(doc, "arch.expansion", 8)
    _set(doc, dotted, copy.deepcopy(value))


STRUCT_OPS: tuple[Callable[[random.Random, dict[str, Any]], None], ...] = (
    s_wrong_value, s_wrong_value, s_huge_range, s_float_range, s_unknown_key, s_unknown_section,
    s_section_type, s_drop, s_bad_option, s_bad_string, s_conflict,
)


def mutate_structure(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(sorted(BASE_STUDIES))
    doc = tomllib.loads(BASE_STUDIES[name])
    ops = [rng.choice(STRUCT_OPS) for _ in range(rng.choice([1, 1, 1, 2]))]
    for op in ops:
        op(rng, doc)
    return f"{name}:{'+'.join(op.__name__[2:] for op in ops)}", dump_toml(doc)


def special_studies() -> list[tuple[str, str | bytes, bool]]:
    """(label, content, must_fail) for inputs no mutation above reliably makes."""
    smoke = BASE_STUDIES["smoke"]
    rng = random.Random(SEED)
    return [
        ("empty", "", True), ("blank", " \n\t\n", True), ("comments-only", "# nothing\n", True),
        ("nul-only", b"\x00" * 64, True), ("binary-junk", rng.randbytes(4096), True),
        ("gzip", gzip.compress(smoke.encode(), mtime=0), True),
        ("utf16-bom", smoke.encode("utf-16"), True),
        ("printable-junk", "".join(rng.choice(JUNK_CHARS) for _ in range(1 << 20)), True),
        ("deep-tables", "[arch]\nstages = " + "{ a = " * 100_000 + "1" + " }" * 100_000, True),
        ("deep-arrays", "[arch]\nstages = " + "[" * 100_000 + "1" + "]" * 100_000, True),
        ("5000-digit-int", smoke.replace("budget = 40_000", "budget = " + "1" * 5000), True),
        ("5000-digit-hex", smoke.replace("budget = 40_000", "budget = 0x" + "f" * 5000), True),
        ("name-newline", smoke.replace('name = "smoke"', 'name = "smoke\\n"'), True),
        ("key-newline", smoke.replace("dropout = 0.0", '"drop\\nout" = 0.0'), True),
        ("section-newline", smoke + '["pru\\nner"]\n', True),
        ("expansion-huge-range",
         smoke.replace("expansion = 4", "expansion = { low = 1, high = 100000000000 }"), True),
        ("pool-grid-huge-range",
         smoke.replace("pool_grid = [1, 2]", "pool_grid = { low = 1, high = 1099511627776 }"),
         True),
        ("blocks-huge", smoke.replace("blocks = { low = 1, high = 2 }", "blocks = 1000000000000"),
         True),
        ("lr-tiny-step", smoke.replace("lr = { low = 0.01, high = 0.2, log = true }",
                                       "lr = { low = 0.01, high = 0.2, step = 1e-300 }"), True),
        ("ei-candidates-huge", smoke.replace("n_startup_trials = 4",
                                             "n_startup_trials = 0\nn_ei_candidates = 1000000000"),
         True),
        ("crlf", smoke.replace("\n", "\r\n"), False),
    ]


# --- data: tiny real inputs -------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """Real CIFAR-10 images: 3 JPEG files per class and their decoded pixels."""

    jpegs: tuple[tuple[int, bytes], ...]  # (label, JPEG file content)
    pixels: np.ndarray  # uint8 N x 32 x 32 x 3, the same images decoded
    labels: np.ndarray  # int64, N
    source: str


@pytest.fixture(scope="module")
def material() -> Material:
    got: dict[int, list[bytes]] = {label: [] for label in range(len(CLASSES))}
    if SHARED_ARCHIVE.exists():
        with tarfile.open(SHARED_ARCHIVE, "r|gz") as tar:  # test/ comes first in the stream
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 3 and parts[1] in CLASSES and member.isfile():
                    files = got[CLASSES.index(parts[1])]
                    if len(files) < 3:
                        files.append(tar.extractfile(member).read())
                    if all(len(f) == 3 for f in got.values()):
                        break
        source = f"{SHARED_ARCHIVE.name}: the first 3 test images of each class"
    elif os.environ.get("SEARCH_REQUIRE_SHARED_DATA"):
        pytest.fail(f"{SHARED_ARCHIVE} is missing")
    else:  # synthetic noise images, so that the fuzzing still runs without the archive
        rng = np.random.default_rng(SEED)
        for files in got.values():
            for _ in range(3):
                files.append(_encode(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "JPEG"))
        source = "synthetic noise JPEGs (shared archive missing)"
    CONTEXT["data_material"] = source
    jpegs = tuple((label, blob) for label, files in got.items() for blob in files)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for _, b in jpegs])
    return Material(jpegs, pixels, np.array([label for label, _ in jpegs], np.int64), source)


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(out, format=fmt)
    return out.getvalue()


@dataclass
class Member:
    """One tar member; ``size`` set when the header should lie about it."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None
    pax: dict[str, str] | None = None


def tar_bytes(members: list[Member], mode: str = "w:gz") -> bytes:
    """A tar archive (``mode`` "w", "w:gz" or "w:xz"), the same bytes on every run."""
    out = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if any(m.pax for m in members) else tarfile.GNU_FORMAT
    liars = [m for m in members if m.size is not None]
    with tarfile.open(fileobj=out, mode=mode.replace(":gz", ""), format=fmt) as tar:
        for m in [m for m in members if m.size is None] + liars:  # a liar's data never follows
            info = tarfile.TarInfo(m.name)
            info.type, info.linkname, info.mode, info.mtime = m.type, m.linkname, 0o644, 0
            if m.pax:
                info.pax_headers = m.pax
            if m.size is not None:
                info.size = m.size
                buf = info.tobuf(tar.format, tar.encoding, tar.errors)
                tar.fileobj.write(buf)
                tar.offset += len(buf)
            elif m.type == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return gzip.compress(out.getvalue(), mtime=0) if mode.endswith(":gz") else out.getvalue()


def batch_dict(m: Material, k: int, n: int = 20) -> dict[bytes, Any]:
    """The k-th python batch: n images from the material, as the original files hold them."""
    idx = [(k * n + i) % len(m.pixels) for i in range(n)]
    rows = m.pixels[idx].transpose(0, 3, 1, 2).reshape(n, 3072)
    return {b"batch_label": f"batch {k}".encode(), b"labels": [int(m.labels[i]) for i in idx],
            b"data": rows, b"filenames": [f"img_{i}.png".encode() for i in idx]}


def batch_members(m: Material, protocol: int = 2) -> list[Member]:
    names = (*TRAIN_BATCHES, TEST_BATCH)
    members = [Member(f"cifar-10-batches-py/{name}", pickle.dumps(batch_dict(m, k), protocol))
               for k, name in enumerate(names)]
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    members.append(Member("cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol)))
    members.append(Member("cifar-10-batches-py/readme.html", b"<html></html>"))
    return members


def image_members(m: Material, png: bool = False) -> list[Member]:
    """train/<class>/ with two images per class and test/<class>/ with one."""
    members = [Member("cifar10/README.txt", b"images")]
    for i, (label, blob) in enumerate(m.jpegs):
        split, name = ("test", f"{i % 3}") if i % 3 == 2 else ("train", f"{i % 3}")
        content, suffix = (_encode(m.pixels[i], "PNG"), "png") if png else (blob, "jpg")
        members.append(Member(f"cifar10/{split}/{CLASSES[label]}/{name}.{suffix}", content))
    return members


def course_dict(m: Material, n: int = 8) -> dict[bytes, Any]:
    return {b"data": m.pixels[:n].copy(), b"ids": list(range(1000, 1000 + n))}


# --- data: hostile pickles and archive members ------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: how a hostile pickle makes the loader call something."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


_RECONSTRUCT = np.zeros(1).__reduce__()[0]


def evil_pickle(rng: random.Random, marker: Path, wrap: Callable[[Any], Any],
                variant: int | None = None) -> tuple[str, bytes]:
    """A pickle whose loading would create ``marker``: os.system, eval, subprocess, ...

    Under protocols 0, 2 (GLOBAL opcodes) and 5 (STACK_GLOBAL), or hand-written;
    ``variant`` walks through all of them (7 payloads x 3 protocols).
    """
    v = rng.randrange(21) if variant is None else variant % 21
    kind, protocol = v % 7, (0, 2, 5)[v // 7]
    if kind == 0:
        payload: Any = _Reduce(os.system, f"touch {marker}")
    elif kind == 1:
        payload = _Reduce(eval, f"open({str(marker)!r}, 'w').close()")
    elif kind == 2:
        payload = _Reduce(subprocess.call, ["touch", str(marker)])
    elif kind == 3:
        payload = _Reduce(exec, f"open({str(marker)!r}, 'w').close()")
    elif kind == 4:
        payload = _Reduce(os.mkdir, str(marker))
    elif kind == 5:  # protocol 0 by hand: GLOBAL then REDUCE, INST, or GLOBAL then OBJ
        text = (b"cos\nsystem\n(S'touch %s'\ntR.", b"(S'touch %s'\nios\nsystem\n.",
                b"(cos\nsystem\nS'touch %s'\no.")[v // 7]
        return f"hand-{v // 7}", text % str(marker).encode()
    else:  # an allowed numpy name carrying a forbidden one
        payload = _Reduce(_RECONSTRUCT, _Reduce(os.system, f"touch {marker}"), (0,), b"b")
    return f"{kind}-p{protocol}", pickle.dumps(wrap(payload), protocol)


def bomb(shape: tuple[int, ...], dtype: str = "uint8") -> _Reduce:
    """A 200-byte pickle of an uninitialised array of ``shape``: gigabytes once touched."""
    return _Reduce(_RECONSTRUCT, np.ndarray, shape, np.dtype(dtype))


def unsafe_member(rng: random.Random, outside: Path, prefix: str,
                  variant: int | None = None) -> tuple[str, Member]:
    """A member that would land outside the folder it is extracted into (9 variants)."""
    target = f"{TOKEN}.txt"
    members = [
        ("dotdot", Member(f"{prefix}/../../../{target}", b"pwned")),
        ("absolute", Member(str(outside / target), b"pwned")),
        ("absolute-tmp", Member(f"/tmp/{TOKEN}/evil.txt", b"pwned")),
        ("symlink", Member(f"{prefix}/link-{TOKEN}", type=tarfile.SYMTYPE, linkname=str(outside))),
        ("hardlink", Member(f"{prefix}/hard-{TOKEN}", type=tarfile.LNKTYPE,
                            linkname="/etc/passwd")),
        ("fifo", Member(f"{prefix}/fifo-{TOKEN}", type=tarfile.FIFOTYPE)),
        ("chardev", Member(f"{prefix}/dev-{TOKEN}", type=tarfile.CHRTYPE)),
        ("pax-path", Member(f"{prefix}/ok.txt", b"pwned", pax={"path": f"../../{target}"})),
        ("gnu-longname", Member(f"{prefix}/{'a' * 150}/../../../../{target}", b"pwned")),
    ]
    return members[rng.randrange(len(members)) if variant is None else variant % len(members)]


def flip_bytes(rng: random.Random, data: bytes, count: int, lo: int = 0, hi: int | None = None) -> \
        bytes:
    out = bytearray(data)
    hi = len(out) if hi is None else min(hi, len(out))
    for _ in range(count):
        out[rng.randrange(lo, max(lo + 1, hi))] ^= 1 + rng.randrange(255)
    return bytes(out)


def chooser(rng: random.Random, variant: int | None) -> Callable[[Sequence[Any]], Any]:
    """``rng.choice``, or with a ``variant`` the table's entries one by one."""
    return lambda table: rng.choice(table) if variant is None else table[variant % len(table)]


BAD_BATCHES: tuple[tuple[str, Callable[[dict[bytes, Any]], Any]], ...] = (
    ("data-float32", lambda b: {**b, b"data": b[b"data"].astype(np.float32)}),
    ("data-int64", lambda b: {**b, b"data": b[b"data"].astype(np.int64)}),
    ("data-1024", lambda b: {**b, b"data": b[b"data"][:, :1024]}),
    ("data-4d", lambda b: {**b, b"data": b[b"data"].reshape(-1, 3, 32, 32)}),
    ("data-1d", lambda b: {**b, b"data": b[b"data"].ravel()}),
    ("data-list", lambda b: {**b, b"data": b[b"data"][:2].tolist()}),
    ("data-bytes", lambda b: {**b, b"data": b[b"data"].tobytes()}),
    ("data-object", lambda b: {**b, b"data": b[b"data"].astype(object)}),
    ("data-none", lambda b: {**b, b"data": None}),
    ("labels-10", lambda b: {**b, b"labels": [10] * len(b[b"labels"])}),
    ("labels-negative", lambda b: {**b, b"labels": [-1, *b[b"labels"][1:]]}),
    ("labels-short", lambda b: {**b, b"labels": b[b"labels"][:-1]}),
    ("labels-strings", lambda b: {**b, b"labels": [str(x) for x in b[b"labels"]]}),
    ("labels-floats", lambda b: {**b, b"labels": [x + 0.5 for x in b[b"labels"]]}),
    ("labels-ragged", lambda b: {**b, b"labels": [[1], [2, 3], *b[b"labels"][2:]]}),
    ("labels-huge", lambda b: {**b, b"labels": [2**70, *b[b"labels"][1:]]}),
    ("labels-bool", lambda b: {**b, b"labels": [True] * len(b[b"labels"])}),
    ("labels-none", lambda b: {**b, b"labels": None}),
    ("labels-dict", lambda b: {**b, b"labels": {1: 2}}),
    ("no-data", lambda b: {k: v for k, v in b.items() if k != b"data"}),
    ("no-labels", lambda b: {k: v for k, v in b.items() if k != b"labels"}),
    ("a-list", lambda b: list(b.values())), ("an-int", lambda b: 7), ("none", lambda b: None),
    ("a-string", lambda b: "data"), ("a-set", lambda b: {1, 2}),
    ("an-array", lambda b: b[b"data"]),
    # Real labels, so that only the refusal of the array itself can stop these.
    ("data-bomb", lambda b: {b"data": bomb((300_000, 3072)), b"labels": [0] * 300_000}),
    ("ndarray-call", lambda b: {b"data": _Reduce(np.ndarray, (300_000, 3072), "u1"),
                                b"labels": [0] * 300_000}),
    ("bytearray-bomb", lambda b: {**b, b"data": _Reduce(bytearray, 2 * 10**9)}),
)
BAD_METAS: tuple[tuple[str, Any], ...] = (
    ("names-wrong", {b"label_names": [b"apple", *[c.encode() for c in CLASSES[1:]]]}),
    ("names-short", {b"label_names": [c.encode() for c in CLASSES[:9]]}),
    ("names-not-list", {b"label_names": b"airplane"}), ("no-names", {b"num_vis": 3072}),
    ("names-undecodable", {b"label_names": [b"\xff\xfe", *[c.encode() for c in CLASSES[1:]]]}),
    ("not-a-dict", [1, 2, 3]), ("names-none", {b"label_names": None}),
)


# op: variants a first, exhaustive pass walks through; random draws follow.
BATCH_OPS = {"truncate-gz": 1, "flip-gz": 1, "flip-header": 1, "pickle": len(BAD_BATCHES),
             "pickle-bytes": 2, "evil": 21, "unsafe": 9, "huge-size": 2, "duplicate": 4,
             "missing": 7, "meta": len(BAD_METAS), "member-name": 4}


def batch_case(rng: random.Random, m: Material, root: Path, i: int, op: str,
               variant: int | None) -> tuple[str, Path, bool]:
    """A mutated CIFAR python batch archive: (label, path, must_fail)."""
    choose = chooser(rng, variant)
    members = batch_members(m, rng.choice([2, 2, 4, 5]))
    pick = rng.randrange(6)  # which batch a content mutation hits
    label, must_fail = op, True
    if op == "pickle":
        what, change = choose(BAD_BATCHES)
        label += f"-{what}"
        members[pick].data = pickle.dumps(change(batch_dict(m, pick)), rng.choice([0, 2, 5]))
    elif op == "pickle-bytes":
        blob = members[pick].data
        must_fail = choose([True, False])  # cut, or a flip (which may land in the pixels)
        members[pick].data = blob[:rng.randrange(len(blob))] if must_fail else \
            flip_bytes(rng, blob, rng.randint(1, 4), hi=120)
    elif op == "evil":
        marker = root / "markers" / f"{TOKEN}-{i}"
        wrap = rng.choice([lambda x: x, lambda x: {b"data": x, b"labels": [0]},
                           lambda x: {**batch_dict(m, pick), b"extra": [x]}])
        what, members[pick].data = evil_pickle(rng, marker, wrap, variant)
        label += f"-{what}"
    elif op == "unsafe":
        what, member = unsafe_member(rng, root / "outside", "cifar-10-batches-py", variant)
        label += f"-{what}"
        members.insert(rng.randrange(len(members) + 1), member)
    elif op == "huge-size":
        members.append(Member("cifar-10-batches-py/data_batch_9", size=choose([10**10, 8**11])))
    elif op == "duplicate":
        again = copy.copy(members[pick])
        again.data = choose([b"", b"junk", pickle.dumps([1, 2]), again.data])
        must_fail = again.data != members[pick].data
        members.append(again)
    elif op == "missing":
        gone = choose(range(7))
        label += f"-{members[gone].name.rsplit('/', 1)[1]}"
        must_fail = gone < 6  # batches.meta is optional
        del members[gone]
    elif op == "meta":
        what, meta = choose(BAD_METAS)
        label += f"-{what}"
        members[6].data = pickle.dumps(meta, 2)
    elif op == "member-name":
        name = members[pick].name
        members[pick].name = choose([name + "\n", name.replace("_", "\n"), name.upper(),
                                     "cifar-10-batches-py/sub/" + name.rsplit("/", 1)[1]])
    data = tar_bytes(members, "w" if op == "flip-header" else "w:gz")
    if op == "truncate-gz":  # within the members: a cut in the end padding loses nothing
        data = data[:rng.randrange(len(data) * 3 // 4)]
    elif op == "flip-gz":
        data = flip_bytes(rng, data, rng.randint(1, 8))
        must_fail = False  # a flip may land where tarfile never reads
    elif op == "flip-header":
        flipped = flip_bytes(rng, data, rng.randint(1, 3), 0, 512)  # in the first header
        data = gzip.compress(flipped, mtime=0)
    path = root / "inputs" / f"batches-{i}.tar.gz"
    path.write_bytes(data)
    return label, path, must_fail


IMAGE_OPS = {"image-bytes": 4, "image-size": 5, "image-format": 6, "non-image": 4,
             "class-folder": 6, "missing": 2, "unsafe": 9, "duplicate": 2, "huge-size": 1,
             "nesting": 3, "truncate-gz": 1, "member-name": 4}


def image_case(rng: random.Random, m: Material, root: Path, i: int, op: str,
               variant: int | None) -> tuple[str, Path, bool]:
    """A mutated image-folder tar: (label, path, must_fail)."""
    choose = chooser(rng, variant)
    members = image_members(m, png=rng.random() < 0.3)
    images = [k for k, mem in enumerate(members) if mem.name.endswith((".jpg", ".png"))]
    pick = rng.choice(images)
    label, must_fail = op, True
    target = members[pick]
    if op == "image-bytes":
        blob, how = target.data, choose(range(4))
        target.data = [blob[:rng.randrange(len(blob))], b"", rng.randbytes(200),
                       blob[:20] + rng.randbytes(40) + blob[60:]][how]
        label += f"-{['truncated', 'empty', 'random', 'scrambled'][how]}"
        must_fail = how < 3  # JPEG decoders shrug off scrambled scan data
    elif op == "image-size":
        side = choose([(64, 48), (1, 1), (32, 33), (31, 32), (4096, 1)])
        fmt = rng.choice(["PNG", "JPEG"])
        target.data = _encode(np.zeros((side[1], side[0], 3), np.uint8), fmt)
        label += f"-{side[0]}x{side[1]}"
    elif op == "image-format":
        fmt = choose(["GIF", "BMP", "TIFF", "WEBP", "PPM", "bomb"])
        if fmt == "bomb":  # a PNG header claiming 100000 x 100000 pixels
            png = _encode(np.zeros((32, 32, 3), np.uint8), "PNG")
            ihdr = (100_000).to_bytes(4, "big") * 2 + png[24:29]  # after the 8-byte signature,
            crc = zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big")  # length and b"IHDR"
            target.data = png[:16] + ihdr + crc + png[33:]
        else:
            target.data = _encode(m.pixels[0], fmt)
        label += f"-{fmt}"
    elif op == "non-image":
        folder = target.name.rsplit("/", 1)[0]
        members.insert(pick, Member(folder + choose(["/notes.txt", "/x.gif", "/data.pkl",
                                                     "/noext"]), b"text"))
    elif op == "class-folder":
        cls = target.name.split("/")[2]
        new = choose(["kitten", "Cat", "cat ", "", "..", "cat\n"])
        for mem in members:
            if mem.name.split("/")[2:3] == [cls]:
                mem.name = mem.name.replace(f"/{cls}/", f"/{new}/")
        label += f"-{new!r}"
    elif op == "missing":
        split = choose(["train", "test"])
        members = [mem for mem in members if f"/{split}/" not in mem.name
                   or (rng.random() < 0.5 and mem.name.split("/")[2] != CLASSES[0])]
        label += f"-{split}"
    elif op == "unsafe":
        what, member = unsafe_member(rng, root / "outside", "cifar10/train/cat", variant)
        label += f"-{what}"
        members.insert(rng.randrange(len(members) + 1), member)
    elif op == "duplicate":
        again = copy.copy(target)
        must_fail = choose([True, False])
        again.data = b"not an image" if must_fail else target.data
        members.append(again)
    elif op == "huge-size":
        members.append(Member("cifar10/train/cat/big.png", size=10**11))
    elif op == "nesting":
        how = choose(range(3))
        if how == 0:
            target.name = target.name.replace(".jpg", "/x.jpg").replace(".png", "/x.png")
        elif how == 1:
            members = [Member("outer/" + mem.name, mem.data) for mem in members]
        else:
            members = [Member(mem.name.split("/", 1)[1], mem.data) for mem in members] + \
                [Member("cifar10/other/x.png", m.jpegs[0][1])]
            must_fail = False  # a wrapper is optional
        label += f"-{how}"
    elif op == "member-name":
        target.name = choose([target.name + "\n", target.name.replace("/", "\n", 2),
                              target.name.replace("/train/", "/train\\"),
                              target.name.replace(".jpg", ".JPG").replace(".png", ".PNG")])
        must_fail = False  # an upper-case suffix is fine
    data = tar_bytes(members, rng.choice(["w:gz", "w:gz", "w", "w:xz"]))
    if op == "truncate-gz":  # within the members: a cut in the end padding loses nothing
        data = data[:rng.randrange(len(data) * 3 // 4)]
    path = root / "inputs" / f"images-{i}.tar.gz"
    path.write_bytes(data)
    return label, path, must_fail


def plan(rng: random.Random, ops: dict[str, int], n_random: int) -> list[tuple[str, int | None]]:
    """Every variant of every op once, then ``n_random`` random draws."""
    first: list[tuple[str, int | None]] = [(op, v) for op, n in ops.items() for v in range(n)]
    return first + [(rng.choice(sorted(ops)), None) for _ in range(n_random)]


def special_data(m: Material, root: Path) -> list[tuple[str, Path, bool]]:
    """Inputs outside the two archive forms: files, folders, FIFOs, the official name."""
    rng = random.Random(SEED)
    inputs = root / "inputs"
    cases: list[tuple[str, Path, bool]] = []

    def put(name: str, data: bytes, must_fail: bool = True) -> None:
        (inputs / name).write_bytes(data)
        cases.append((name, inputs / name, must_fail))

    put("empty.tar.gz", b"")
    put("junk.tar.gz", rng.randbytes(4096))
    put("text.tar", b"hello\n" * 100)
    put("gzip-of-junk.tgz", gzip.compress(rng.randbytes(1000), mtime=0))
    put("empty-tar.tar", tar_bytes([], "w"))
    put("only-readme.tar.gz", tar_bytes([Member("README", b"x")]))
    put("cifar-10-python.tar.gz", tar_bytes(batch_members(m)))  # md5 of the official file
    put("both-forms.tar.gz", tar_bytes(batch_members(m) + image_members(m)), False)
    put("two-wrappers.tar.gz", tar_bytes([Member("a/" + mem.name, mem.data)
                                          for mem in batch_members(m)]))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("cifar-10-batches-py/data_batch_1", b"x")
    put("batches.zip", zipped.getvalue())
    # Folders: a FIFO or a device where a batch belongs must not block or never end.
    for name, make in (("fifo", lambda p: os.mkfifo(p)),
                       ("dir", lambda p: p.mkdir()),
                       ("dangling", lambda p: p.symlink_to(root / "nowhere"))):
        folder = inputs / f"batches-with-{name}"
        folder.mkdir()
        for mem in batch_members(m):
            (folder / mem.name.rsplit("/", 1)[1]).write_bytes(mem.data)
        (folder / "data_batch_3").unlink()
        make(folder / "data_batch_3")
        cases.append((folder.name, folder, True))
    tree = inputs / "tree-with-fifo"
    for mem in image_members(m):
        (tree / mem.name).parent.mkdir(parents=True, exist_ok=True)
        (tree / mem.name).write_bytes(mem.data)
    os.mkfifo(tree / "cifar10" / "test" / "cat" / "zz.png")
    cases.append((tree.name, tree, True))
    os.mkfifo(inputs / "a-fifo.tar.gz")
    cases.append(("a-fifo.tar.gz", inputs / "a-fifo.tar.gz", True))
    cases.append(("missing", inputs / "no-such.tar.gz", True))
    (inputs / "empty-folder").mkdir()
    cases.append(("empty-folder", inputs / "empty-folder", True))
    return cases


# --- predict: course-format pickles -----------------------------------------------

BAD_COURSE: tuple[tuple[str, Callable[[dict[bytes, Any]], Any], bool], ...] = (
    # (label, change, must_fail)
    ("key-images", lambda d: {b"images": d[b"data"], b"ids": d[b"ids"]}, True),
    ("no-ids", lambda d: {b"data": d[b"data"]}, True),
    ("no-data", lambda d: {b"ids": d[b"ids"]}, True),
    ("empty-dict", lambda d: {}, True),
    ("str-keys", lambda d: {"data": d[b"data"], "ids": d[b"ids"]}, False),
    ("extra-key", lambda d: {**d, b"labels": [1]}, False),
    ("float32", lambda d: {**d, b"data": d[b"data"].astype(np.float32)}, True),
    ("float01", lambda d: {**d, b"data": d[b"data"] / 255.0}, True),
    ("int64", lambda d: {**d, b"data": d[b"data"].astype(np.int64)}, True),
    ("uint16", lambda d: {**d, b"data": d[b"data"].astype(np.uint16)}, True),
    ("bool", lambda d: {**d, b"data": d[b"data"] > 0}, True),
    ("object", lambda d: {**d, b"data": d[b"data"].astype(object)}, True),
    ("rows-3072", lambda d: {**d, b"data": d[b"data"].reshape(len(d[b"ids"]), -1)}, True),
    ("chw", lambda d: {**d, b"data": d[b"data"].transpose(0, 3, 1, 2).copy()}, True),
    ("gray", lambda d: {**d, b"data": d[b"data"][..., 0]}, True),
    ("rgba", lambda d: {**d, b"data": np.concatenate([d[b"data"], d[b"data"][..., :1]], 3)},
     True),
    ("one-image", lambda d: {**d, b"data": d[b"data"][0]}, True),
    ("zero-images", lambda d: {b"data": d[b"data"][:0], b"ids": []}, True),
    ("64x64", lambda d: {**d, b"data": np.zeros((len(d[b"ids"]), 64, 64, 3), np.uint8)}, True),
    ("data-list", lambda d: {**d, b"data": d[b"data"].tolist()}, True),
    ("data-bytes", lambda d: {**d, b"data": d[b"data"].tobytes()}, True),
    ("data-none", lambda d: {**d, b"data": None}, True),
    ("fortran-order", lambda d: {**d, b"data": np.asfortranarray(d[b"data"])}, False),
    ("ids-short", lambda d: {**d, b"ids": d[b"ids"][:-1]}, True),
    ("ids-long", lambda d: {**d, b"ids": [*d[b"ids"], 5]}, True),
    ("ids-empty", lambda d: {**d, b"ids": []}, True),
    ("ids-duplicate", lambda d: {**d, b"ids": [1] * len(d[b"ids"])}, True),
    ("ids-none", lambda d: {**d, b"ids": None}, True),
    ("ids-int", lambda d: {**d, b"ids": 8}, True),
    ("ids-dict", lambda d: {**d, b"ids": dict.fromkeys(d[b"ids"])}, True),
    ("ids-string", lambda d: {**d, b"ids": "abcdefgh"}, True),
    ("ids-bytes", lambda d: {**d, b"ids": b"abcdefgh"}, True),
    ("ids-floats", lambda d: {**d, b"ids": [i + 0.5 for i in d[b"ids"]]}, True),
    ("ids-nan", lambda d: {**d, b"ids": [math.nan] * len(d[b"ids"])}, True),
    ("ids-bools", lambda d: {**d, b"ids": [i % 2 == 0 for i in d[b"ids"]]}, True),
    ("ids-ragged", lambda d: {**d, b"ids": [[1], [2, 3], *d[b"ids"][2:]]}, True),
    ("ids-nested", lambda d: {**d, b"ids": [[i] for i in d[b"ids"]]}, True),
    ("ids-huge", lambda d: {**d, b"ids": [2**70 + i for i in d[b"ids"]]}, True),
    ("ids-uint64", lambda d: {**d, b"ids": [2**63 + i for i in d[b"ids"]]}, True),
    ("ids-undecodable", lambda d: {**d, b"ids": [b"\xff" + bytes([i % 256]) for i in d[b"ids"]]},
     True),
    ("ids-none-items", lambda d: {**d, b"ids": [None] * len(d[b"ids"])}, True),
    ("ids-array", lambda d: {**d, b"ids": np.array(d[b"ids"])}, False),
    ("ids-strings", lambda d: {**d, b"ids": [f"img-{i}" for i in d[b"ids"]]}, False),
    ("ids-bytes-items", lambda d: {**d, b"ids": [f"{i}".encode() for i in d[b"ids"]]}, False),
    ("ids-mixed", lambda d: {**d, b"ids": ["a", *d[b"ids"][1:]]}, False),
    ("ids-tuple", lambda d: {**d, b"ids": tuple(d[b"ids"])}, False),
    ("ids-newline", lambda d: {**d, b"ids": [f"a\n{i}," for i in d[b"ids"]]}, False),
    ("a-list", lambda d: [d[b"data"], d[b"ids"]], True), ("a-tuple", lambda d: (1, 2), True),
    ("an-int", lambda d: 3, True), ("none", lambda d: None, True), ("a-str", lambda d: "x", True),
    ("a-set", lambda d: {1}, True), ("an-array", lambda d: d[b"data"], True),
    ("data-bomb", lambda d: {b"data": bomb((100_000, 32, 32, 3)), b"ids": list(range(100_000))},
     True),
    ("ndarray-call", lambda d: {b"data": _Reduce(np.ndarray, (100_000, 32, 32, 3), "u1"),
                                b"ids": list(range(100_000))}, True),
    ("bytearray-bomb", lambda d: {**d, b"ids": _Reduce(bytearray, 2 * 10**9)}, True),
)


def predict_cases(rng: random.Random, m: Material, root: Path) -> list[tuple[str, Path, bool]]:
    """Mutated course-format inputs: (label, path, must_fail)."""
    inputs = root / "inputs"
    cases: list[tuple[str, Path, bool]] = []

    def put(label: str, data: bytes, must_fail: bool) -> None:
        path = inputs / f"course-{len(cases)}.pkl"
        path.write_bytes(data)
        cases.append((label, path, must_fail))

    for label, change, must_fail in BAD_COURSE:
        put(label, pickle.dumps(change(course_dict(m)), rng.choice([0, 2, 4, 5])), must_fail)
    for i in range(21):
        marker = root / "markers" / f"{TOKEN}-predict-{i}"
        wrap = rng.choice([lambda x: x, lambda x: {b"data": x, b"ids": [1]},
                           lambda x: {**course_dict(m), b"ids": [x]}])
        what, data = evil_pickle(rng, marker, wrap, i)
        put(f"evil-{what}", data, True)
    valid = pickle.dumps(course_dict(m), 2)
    for i in range(14):
        if i % 2:
            put("truncated", valid[:rng.randrange(len(valid) - 1)], True)
        else:  # structure sits at both ends; the pixels in the middle take any value
            lo = rng.choice([0, len(valid) - 120])
            put("flipped", flip_bytes(rng, valid, rng.randint(1, 3), lo, lo + 120), False)
    put("empty", b"", True)
    put("junk", rng.randbytes(2000), True)
    put("gzipped", gzip.compress(valid, mtime=0), True)
    put("json", json.dumps({"data": [], "ids": []}).encode(), True)
    # Image folders.
    for label, files, must_fail in (
        ("folder-ok", {"a.png": _encode(m.pixels[0], "PNG"), "b.jpg": m.jpegs[1][1]}, False),
        ("folder-big", {"a.png": _encode(np.zeros((40, 32, 3), np.uint8), "PNG")}, True),
        ("folder-text", {"a.png": m.jpegs[0][1], "notes.txt": b"x"}, True),
        ("folder-corrupt", {"a.jpg": m.jpegs[0][1][:50]}, True),
        ("folder-gif", {"a.png": _encode(m.pixels[0], "GIF")}, True),
        ("folder-empty", {}, True), ("folder-hidden-only", {".x.png": m.jpegs[0][1]}, True),
        ("folder-subfolder", {"a.png": m.jpegs[0][1], "sub/b.png": m.jpegs[1][1]}, True),
        ("folder-fifo", {"a.png": m.jpegs[0][1], "b.png": None}, True),
    ):
        folder = inputs / label
        folder.mkdir()
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                os.mkfifo(folder / name)
            else:
                (folder / name).write_bytes(content)
        cases.append((label, folder, must_fail))
    os.mkfifo(inputs / "a-fifo.pkl")
    cases.append(("a-fifo", inputs / "a-fifo.pkl", True))
    cases.append(("missing", inputs / "no-such.pkl", True))
    return cases


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model saved the way `search promote` saves one."""
    import torch

    from models import ArchConfig, StageConfig, build_model
    from trainers.config import TrainConfig

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(SEED)
    arch = ArchConfig(stages=(StageConfig(1, 8),), stem_width=8)
    config = {"arch": arch.to_dict(), "train": TrainConfig(tta_flip=False).to_dict()}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.save(build_model(arch).state_dict(), folder / "model.pt")
    return folder


# --- the tests --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BASE_STUDIES))
def test_toml_writer_round_trips_the_builtin_studies(name: str) -> None:
    doc = tomllib.loads(BASE_STUDIES[name])
    assert tomllib.loads(dump_toml(doc)) == doc
    odd = {"x\ny": {"": [math.inf, -0.0, "\x00\x7f\"\\é"], "t": {"a": datetime.date(2020, 1, 2)}}}
    assert dump_toml(tomllib.loads(dump_toml(odd))) == dump_toml(odd)


@pytest.mark.timeout(150)
def test_mutated_study_files_fail_in_one_line_or_load(sandbox: Sandbox, run: Runner) -> None:
    rng = random.Random(SEED)
    inputs = sandbox.root / "inputs"
    cases: list[tuple[str, str, str | bytes, bool]] = [
        ("study-special", label, content, must_fail) for label, content, must_fail in
        special_studies()]
    cases += [("study-text", *mutate_text(rng), False) for _ in range(N_STUDY_TEXT)]
    cases += [("study-structure", *mutate_structure(rng), False) for _ in range(N_STUDY_STRUCT)]
    for i, (kind, label, content, must_fail) in enumerate(cases):
        path = inputs / f"study-{i}.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        code = run(kind, f"{i}:{label}", ["space", "--study", str(path)], path,
                   must_fail=must_fail)
        if code == 0 or i % SAMPLE_EVERY == 0:
            run(kind + SAMPLE, f"{i}:{label}",
                ["space", "--study", str(path), "--sample", "5"], path)
    (inputs / "a-folder.toml").mkdir()
    os.mkfifo(inputs / "a-fifo.toml")
    for path in (inputs / "a-folder.toml", inputs / "a-fifo.toml", inputs / "missing.toml"):
        run("study-special", path.name, ["space", "--study", str(path)], path, must_fail=True)
    run.check()
    sandbox.check()
    studies = [TALLIES[k] for k in ("study-special", "study-text", "study-structure")]
    assert sum(t.exit_2 for t in studies) >= 300
    for kind in ("study-text", "study-structure"):
        assert TALLIES[kind].exit_0 <= 0.2 * TALLIES[kind].cases, kind


@pytest.mark.timeout(120)
def test_mutated_data_sets_fail_in_one_line_or_load(sandbox: Sandbox, run: Runner,
                                                    material: Material) -> None:
    rng = random.Random(SEED + 1)
    root = sandbox.root
    (root / "outside").mkdir()
    cases = [("data-batches", *batch_case(rng, material, root, i, op, variant))
             for i, (op, variant) in enumerate(plan(rng, BATCH_OPS, N_RANDOM_DATA))]
    cases += [("data-images", *image_case(rng, material, root, i, op, variant))
              for i, (op, variant) in enumerate(plan(rng, IMAGE_OPS, N_RANDOM_DATA))]
    cases += [("data-special", *case) for case in special_data(material, root)]
    # The unmutated inputs load, so that every refusal below comes from its mutation.
    for kind, members in (("batches", batch_members(material)),
                          ("images", image_members(material))):
        path = root / "inputs" / f"valid-{kind}.tar.gz"
        path.write_bytes(tar_bytes(members))
        assert main(["data", "--data", str(path)]) == 0, run.capsys.readouterr().err
    run.capsys.readouterr()
    for kind, label, path, must_fail in cases:
        run(kind, label, ["data", "--data", str(path)], path, must_fail=must_fail, progress=True)
    run.check()
    assert not any((root / "markers").iterdir()), "a pickle's payload ran"
    assert not any((root / "outside").iterdir()), "an archive member was written outside"
    assert any((root / "cache").glob("cifar10-*.npz")), "the valid inputs were not cached here"
    sandbox.check()
    data = [TALLIES[k] for k in ("data-batches", "data-images", "data-special")]
    assert sum(t.exit_2 for t in data) >= 100
    assert sum(t.exit_0 for t in data) <= 0.15 * sum(t.cases for t in data)


@pytest.mark.timeout(120)
def test_mutated_predict_inputs_fail_in_one_line_or_predict(sandbox: Sandbox, run: Runner,
                                                            material: Material,
                                                            run_dir: Path) -> None:
    rng = random.Random(SEED + 2)
    root = sandbox.root
    out = root / "out" / "sub.csv"
    valid = root / "inputs" / "valid.pkl"
    valid.write_bytes(pickle.dumps(course_dict(material), 2))
    argv = ["predict", str(run_dir), "--out", str(out), "--device", "cpu", "--input"]
    assert main([*argv, str(valid)]) == 0, run.capsys.readouterr().err
    assert out.read_text().splitlines()[0] == "ID,Labels"
    run.capsys.readouterr()
    for label, path, must_fail in predict_cases(rng, material, root):
        run("predict", label, [*argv, str(path)], path, must_fail=must_fail)
    run.check()
    assert not any((root / "markers").iterdir()), "a pickle's payload ran"
    sandbox.check()
    tally = TALLIES["predict"]
    assert tally.exit_0 <= 0.2 * tally.cases
