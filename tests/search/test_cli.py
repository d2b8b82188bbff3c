"""The ``search`` console command: output of good runs, and one-line errors with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from search.cli import main
from tests.conftest import MINIMAL_STUDY
from trainers.data import CLASSES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

SMOKE_BUDGET = 40_000  # space/studies/smoke.toml

GOOD = MINIMAL_STUDY


def study_file(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of `GOOD` with the line ``old`` replaced by ``new``, written to a file."""
    lines = GOOD.splitlines()
    assert lines.count(old) == 1, f"{old!r} is not exactly one line of GOOD"
    path = tmp_path / "my study.toml"  # a space in the path must not matter
    path.write_text("\n".join(new if line == old else line for line in lines) + "\n")
    return path


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *parts: str) -> None:
    assert "Traceback" not in err
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("search: error: ")
    for part in parts:
        assert part in lines[0]


def test_good_study_file_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    code, out, err = run_main(["space", "--study", str(path)], capsys)
    assert (code, err) == (0, "")
    assert "study    mini" in out
    assert "100,000" in out


# -- bad input: exit 2 and one line on stderr -------------------------------------------


BAD_LINES = [
    pytest.param("[arch]", "[arch]\ndepth = 3", "arch.depth", id="unknown-arch-key"),
    pytest.param("width = [16, 32]", 'width = "wide"', "arch.width", id="width-string"),
    pytest.param("budget = 100_000", "budget = 0", "study.budget", id="budget-zero"),
    pytest.param("[arch]", "[arch]\nkernel = 4", "arch.kernel", id="kernel-even"),
    pytest.param("width = [16, 32]", "", "arch.width", id="missing-width"),
    pytest.param("[pruner]", "[pruner]\npercentile = 50.0", "pruner.percentile",
                 id="percentile-on-hyperband"),
    pytest.param("width = [16, 32]", "width = [16, 32", "not valid TOML", id="toml-syntax"),
]


@pytest.mark.parametrize(("old", "new", "key"), BAD_LINES)
@pytest.mark.parametrize("command", ["space", "baselines"])
def test_bad_study_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         command: str, old: str, new: str, key: str) -> None:
    path = study_file(tmp_path, old, new)
    code, out, err = run_main([command, "--study", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, str(path), key)


def test_bad_study_with_sample_exits_2(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file(tmp_path, "budget = 100_000", "budget = -1")
    code, _, err = run_main(["space", "--study", str(path), "--sample", "5", "--json"], capsys)
    assert code == 2
    assert_one_line_error(err, str(path), "study.budget", "must be > 0")


def test_missing_study_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    code, _, err = run_main(["space", "--study", str(path)], capsys)
    assert code == 2
    assert_one_line_error(err, str(path), "no such study file")


def test_unknown_builtin_exits_2_listing_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["space", "--study", "smokey"], capsys)
    assert code == 2
    assert_one_line_error(err, "'smokey'", "resnet-budget", "smoke")


def test_unbuildable_sampler_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file(tmp_path, "[sampler]", "[sampler]\nmultivariate = false\ngroup = true")
    code, _, err = run_main(["space", "--study", str(path), "--sample", "5"], capsys)
    assert code == 2
    assert_one_line_error(err, str(path), "sampler.group")


def test_univariate_tpe_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file(tmp_path, "[sampler]", "[sampler]\nmultivariate = false")
    code, out, _ = run_main(["space", "--study", str(path), "--sample", "5", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["proposals"] == 5


def test_sample_shows_the_block_types_and_regularisers_proposed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file(tmp_path, "[arch]", '[arch]\nblock_type = ["preact", "shake"]\n'
                      'branch_drop = ["none", "shakedrop"]\nbranch_drop_rate = 0.3')
    code, out, _ = run_main(["space", "--study", str(path), "--sample", "20", "--seed", "3"],
                            capsys)
    assert code == 0
    shares = {line.split()[0]: line.split()[1:] for line in out.splitlines()
              if line.startswith(("blocks ", "branches "))}
    assert set(shares["blocks"][::2]) == {"preact", "shake"}
    assert set(shares["branches"][::2]) == {"none", "shakedrop"}
    code, out, _ = run_main(["space", "--study", str(path), "--sample", "20", "--seed", "3",
                             "--json"], capsys)
    counts = json.loads(out)["block_types"]
    assert set(counts) == {"preact", "shake"} and sum(counts.values()) == 20


def test_kernel_range_with_even_kernel_does_not_crash_sampling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file(tmp_path, "[arch]", "[arch]\nkernel = { low = 3, high = 5 }")
    code, _, err = run_main(["space", "--study", str(path), "--sample", "30"], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert code == 2
        assert_one_line_error(err, str(path), "arch.kernel")


# -- argparse errors ---------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "named"), [
    (["space", "--sample", "0"], "--sample"),
    (["space", "--sample", "-3"], "--sample"),
    (["space", "--sample", "x"], "--sample"),
    (["space", "--seed", "-1"], "--seed"),
    (["space", "--seed", "one"], "--seed"),
    (["space", "--sampler", "tpe"], "--sampler"),
    (["space", "--frobnicate"], "--frobnicate"),
    (["frobnicate"], "frobnicate"),
    ([], "COMMAND"),
])
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                              named: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "search" in err and "error:" in err
    assert named in err


# -- search space ------------------------------------------------------------------------


def builtin_table(name: str) -> dict[str, Any]:
    text = resources.files("space").joinpath("studies", f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_space_shows_every_key_budget_and_baselines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["space", "--study", "resnet-budget"], capsys)
    assert (code, err) == (0, "")
    table = builtin_table("resnet-budget")
    shown = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    for section in ("arch", "train"):
        assert table[section], section
        for key in table[section]:
            assert f"{section}.{key}" in shown, f"{section}.{key} missing from:\n{out}"
    assert "budget   5,000,000 parameters" in out
    [line] = [x for x in out.splitlines() if "baselines inside the space:" in x]
    inside = line.split(":", 1)[1].replace(",", " ").split()
    assert "resnet-443" in inside
    assert "resnet-110" not in inside  # 18 blocks per stage; the space allows at most 9


def test_space_defaults_to_resnet_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["space"], capsys)
    assert code == 0
    assert out.startswith("study    resnet-budget  (built-in study 'resnet-budget')")


def sample_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    code, out, err = run_main(["space", "--study", "smoke", "--sample", "20", *extra, "--json"],
                              capsys)
    assert (code, err) == (0, "")
    result: dict[str, Any] = json.loads(out)
    return result


def assert_sane_dry_run(result: dict[str, Any]) -> None:
    assert result["study"] == "smoke"
    assert result["proposals"] == 20
    assert result["accepted"] + result["rejected"] == 20
    assert 0.0 <= result["rejection_rate"] <= 1.0
    assert result["rejection_rate"] == pytest.approx(result["rejected"] / 20)
    q = result["n_params"]
    assert list(q) == ["min", "p10", "median", "p90", "max"]
    assert 0 < q["min"] <= q["p10"] <= q["median"] <= q["p90"] <= q["max"] <= SMOKE_BUDGET


def test_sample_json_reports_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    result = sample_json(capsys, "--seed", "1")
    assert_sane_dry_run(result)
    assert result["sampler"] == "TPESampler + budget-aware redraws"
    assert result["inner_draws"] >= result["proposals"]


def test_sample_is_deterministic_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    first = sample_json(capsys, "--seed", "1")
    second = sample_json(capsys, "--seed", "1")
    other = sample_json(capsys, "--seed", "2")
    keys = ("n_params", "rejected", "inner_draws")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["n_params"] != other["n_params"]  # the seed is used at all


def test_sample_with_random_sampler(capsys: pytest.CaptureFixture[str]) -> None:
    first = sample_json(capsys, "--seed", "1", "--sampler", "random")
    assert_sane_dry_run(first)
    assert first["sampler"] == "RandomSampler"
    assert first["inner_draws"] == 0  # no budget-aware redraws
    second = sample_json(capsys, "--seed", "1", "--sampler", "random")
    assert first["n_params"] == second["n_params"]


def test_sample_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["space", "--study", "smoke", "--sample", "20", "--seed", "1"],
                              capsys)
    assert (code, err) == (0, "")
    assert f"budget {SMOKE_BUDGET:,} parameters" in out
    assert "proposals  20 in" in out
    assert "accepted   parameters: min " in out


# -- search baselines --------------------------------------------------------------------


def baseline_rows(out: str) -> dict[str, list[str]]:
    lines = out.split("\n\n")[0].splitlines()
    assert lines[0].split()[:6] == ["name", "parameters", "paper", "vs", "paper", "MFLOPs"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_baselines_lists_resnet_443(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["baselines"], capsys)
    assert (code, err) == (0, "")
    rows = baseline_rows(out)
    assert rows["resnet-443"][1:4] == ["4,697,162", "-", "-"]
    assert rows["resnet-443"][5] == "yes"
    # The paper's figure beside ours: WRN-40-2 is 2.2M in the paper, 2,243,578 here.
    assert rows["wrn-40-2"][1:4] == ["2,243,578", "2.2M", "+2.0%"]
    assert rows["wrn-40-2"][5] == "yes"
    assert rows["pyramidnet-110-a84"][5] == "outside-space"  # 18 blocks a stage
    assert "pyramidnet-110-a48: Han et al. 2017" in out


def test_baselines_against_smoke_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["baselines", "--study", "smoke"], capsys)
    assert code == 0
    rows = baseline_rows(out)
    assert rows["resnet-443"][1] == "4,697,162"
    assert rows["resnet-443"][5] == "over-budget"


# -- real processes ----------------------------------------------------------------------


def console_script() -> str:
    beside = Path(sys.executable).parent / "search"
    found = str(beside) if beside.is_file() else shutil.which("search")
    assert found, "the `search` console script is not installed"
    return found


@pytest.mark.parametrize("how", ["python -m search", "console script"])
def test_process_exits_2_with_one_line(tmp_path: Path, how: str) -> None:
    path = study_file(tmp_path, "width = [16, 32]", "width = [16, true]")
    prefix = [sys.executable, "-m", "search"] if how == "python -m search" else [console_script()]
    proc = subprocess.run([*prefix, "space", "--study", str(path)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, str(path), "arch.width", "must be int")


# -- search data ----------------------------------------------------------------------


def test_data_summarises_a_data_set_and_caches_it(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.trainers.test_data import make_tar, write_image_tree

    monkeypatch.setenv("SEARCH_CACHE", str(tmp_path / "cache"))
    archive = make_tar(tmp_path / "tiny.tar.gz", write_image_tree(tmp_path / "tree"))
    code, out, err = run_main(["data", "--data", str(archive)], capsys)
    assert code == 0, err
    assert f"source   {archive}" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[4:]}
    assert set(rows) == {*CLASSES, "total"}
    assert list((tmp_path / "cache").glob("*.npz"))
    assert "decoding" in err


@pytest.mark.parametrize("argv", [["data", "--data", "/nonexistent/cifar"], ["data"]])
def test_data_errors_exit_2_with_one_line(argv: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("search: error:")


def test_the_trainer_imports_neither_optuna_nor_ray_nor_torchvision() -> None:
    code = ("import sys, trainers, trainers.training, trainers.augment, trainers.data; "
            "bad = [m for m in ('optuna', 'ray', 'torchvision') if m in sys.modules]; "
            "sys.exit(', '.join(bad) or None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_reading_commands_do_not_create_an_empty_store(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEARCH_STORAGE", raising=False)
    for command in ("trials", "best", "dashboard"):
        assert main([command, "--study", "smoke"]) == 2
        assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_search_space_and_its_error_paths_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from search.cli import main\n"
        "assert main(['space', '--study', 'smoke']) == 0\n"
        "assert main(['space', '--study', 'no-such-study']) == 2\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "budget   40,000 parameters" in result.stdout
