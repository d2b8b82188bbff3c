"""The ``[arch]`` table: registry-driven keys, conditional block settings, the inverse map."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from models import BASELINES, ArchConfig, Basic, StageConfig
from models.blocks import BLOCKS, register_block, unregister_block
from models.shapes import Layer
from models.validate import ConfigError, field_types
from space import SpecError, load_spec
from tests.conftest import MINIMAL_STUDY, RandomSuggester

ROOT = Path(__file__).resolve().parents[2]


def study(tmp_path: Path, arch_lines: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(MINIMAL_STUDY.replace("[arch]\n", f"[arch]\n{arch_lines}\n"), encoding="utf-8")
    return path


def draws(spec: Any, n: int = 60) -> Iterator[tuple[dict[str, Any], ArchConfig]]:
    for seed in range(n):
        trial = RandomSuggester(seed)
        arch = spec.sample_arch(trial)
        yield trial.params, arch


def test_expansion_is_drawn_only_with_bottleneck_blocks(tmp_path: Path) -> None:
    spec = load_spec(study(tmp_path, 'block_type = ["basic", "bottleneck"]\nexpansion = [2, 4]'))
    seen = set()
    for params, arch in draws(spec):
        seen.add(params["block_type"])
        assert ("expansion" in params) == ("expansion" in field_types(BLOCKS[arch.block.name]))
        assert arch.block.name == params["block_type"]
        assert spec.arch_params(arch) == params
    assert seen == {"basic", "bottleneck"}
    conditions = {key: condition for key, _, condition in spec.dims()}
    assert conditions["arch.expansion"] == "if block_type = bottleneck"
    assert conditions["arch.width"] == "per stage"


def test_block_type_choices_are_the_registry(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(study(tmp_path, 'block_type = ["basic", "triangle"]'))
    assert f"must be one of {tuple(BLOCKS)}" in str(info.value)


@register_block
@dataclass(frozen=True)
class Grouped(Basic):
    """A throwaway block type with a setting of its own (never built here)."""

    name: ClassVar[str] = "grouped_test"
    slices: int = 1  # a setting no registered type has

    def __post_init__(self) -> None:
        if self.slices < 1:
            raise ConfigError("slices", self.slices, "must be >= 1")

    def check_width(self, width: int) -> str | None:
        return None if width % self.slices == 0 else f"must be a multiple of slices={self.slices}"

    def layers(self, c_in: int, c_out: int, kernel: int, stride: int,
               size: int) -> Iterator[Layer]:
        yield from super().layers(c_in, c_out, kernel, stride, size)


unregister_block(Grouped.name)  # registered only inside the test below


def test_a_registered_block_setting_becomes_a_study_key(tmp_path: Path) -> None:
    register_block(Grouped)
    try:
        spec = load_spec(study(tmp_path, 'block_type = ["basic", "grouped_test"]\n'
                                         "slices = [1, 2, 4]"))
        conditions = {key: condition for key, _, condition in spec.dims()}
        assert conditions["arch.slices"] == "if block_type = grouped_test"
        for params, arch in draws(spec):
            assert ("slices" in params) == isinstance(arch.block, Grouped)
            assert spec.arch_params(arch) == params
        with pytest.raises(SpecError, match=r"arch\.slices: choice 0: must be >= 1"):
            load_spec(study(tmp_path, 'block_type = "grouped_test"\nslices = [0, 2]'))
        with pytest.raises(SpecError, match=r"arch\.width: 16 must be a multiple of slices=32"):
            load_spec(study(tmp_path, 'block_type = "grouped_test"\nslices = 32'))
    finally:
        unregister_block(Grouped.name)
    with pytest.raises(SpecError, match=r"arch\.slices: unknown key"):
        load_spec(study(tmp_path, "slices = 2"))


def test_arch_params_names_what_the_space_cannot_make() -> None:
    spec = load_spec("resnet-budget")
    arch = BASELINES["resnet-20"]
    stride_1 = ArchConfig.from_dict({**arch.to_dict(), "stages": [
        {**s, "stride": 1} for s in arch.to_dict()["stages"]]})
    with pytest.raises(ValueError, match=r"stages\[1\]\.stride=1 cannot be made by this space"):
        spec.arch_params(stride_1)
    odd_window = ArchConfig(stages=arch.stages, stem_width=16, pool_kernel=3)
    with pytest.raises(ValueError, match=r"pool_kernel=3 cannot be made"):
        spec.arch_params(odd_window)
    per_stage = ArchConfig(stages=(*arch.stages[:2], StageConfig(3, 64, stride=2,
                                                                  block=BLOCKS["bottleneck"]())),
                           stem_width=16)
    with pytest.raises(ValueError, match=r"stages\[2\]\.block="):
        spec.arch_params(per_stage)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("code", [
    "import space; space.load_spec('resnet-budget')",
    "import space; s = space.load_spec('smoke'); space.make_sampler(s); s.dims()",
    "from models import BASELINES, count_params, ArchConfig; count_params(BASELINES['resnet-20'])",
    "from trainers.config import TrainConfig; import trainers; trainers.TrainConfig",
])
def test_reading_study_files_and_counting_leave_torch_unimported(code: str) -> None:
    done = run_python(f"{code}\nimport sys\nassert 'torch' not in sys.modules, 'torch imported'")
    assert done.returncode == 0, done.stderr


def test_lazy_package_names_still_import() -> None:
    done = run_python("from trainers import fit, TrainConfig, load_cifar10\n"
                      "from models import build_model, BASELINES\n"
                      "import models, trainers\n"
                      "assert set(models.__all__) <= set(dir(models))\n"
                      "assert all(getattr(trainers, n) for n in trainers.__all__)")
    assert done.returncode == 0, done.stderr


def module_imports(path: Path) -> set[str]:
    """Project modules ``path`` imports at run time (top level or in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("models", "space", "trainers")}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {}
    for package in ("models", "space", "trainers"):
        for path in (ROOT / package).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            graph[name] = {m for m in module_imports(path) if m != name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt)  # type: ignore[func-returns-value]
                               and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert not cycles, cycles
