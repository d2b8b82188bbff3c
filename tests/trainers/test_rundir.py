"""trainers.rundir: the run folder's files, named in one place, written and read back."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers import rundir
from trainers.locate import DATA_CANDIDATES, DATA_ENV, find_data
from trainers.safeio import DataError

ROOT = Path(__file__).resolve().parents[2]
CODE = ("models", "space", "trainers", "search", "benchmarks")  # tests and docs excepted
FILE_NAMES = (rundir.CONFIG, rundir.CHECKPOINT, rundir.PREV_CHECKPOINT, rundir.MODEL,
              rundir.METRICS, rundir.CURVES, rundir.CONFUSION, rundir.SUMMARY,
              rundir.EVALUATION, rundir.PARETO, rundir.REPORT, rundir.LOCK)

HISTORY = [{"epoch": 1, "train_loss": 2.1, "train_acc": 0.2, "val_loss": 1.9, "val_acc": 0.31,
            "lr": 0.05, "seconds": 1.25, "images_per_s": 4000.0, "extra": 7.0},
           {"epoch": 2, "train_loss": 1.51234567, "train_acc": 0.45, "val_loss": 1.4,
            "val_acc": 0.5, "lr": 0.1, "seconds": 1.5, "images_per_s": 3900.5}]


def file_names_in(path: Path) -> list[str]:
    """String constants of ``path`` that are a run-folder file name or a path ending in one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [name for name in FILE_NAMES
                      if node.value == name or node.value.endswith("/" + name)]
    return found


def test_run_folder_files_are_named_only_in_rundir() -> None:
    offenders = {}
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "trainers" / "rundir.py":
                continue
            names = file_names_in(path)
            if names:
                offenders[str(path.relative_to(ROOT))] = names
    assert offenders == {}, "name run-folder files through trainers.rundir"


def test_the_scan_finds_a_file_name_used_as_a_path(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""A docstring may say config.json."""\n'
                      'HELP = "writes config.json, model.pt"\n'
                      'path = folder / "model.pt"\nother = "runs/x/summary.json"\n')
    assert sorted(file_names_in(module)) == [rundir.MODEL, rundir.SUMMARY]


def test_rundir_imports_no_torch() -> None:
    code = "import sys, trainers.rundir, trainers.locate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_metrics_round_trip_in_release_format(tmp_path: Path) -> None:
    path = rundir.write_metrics(tmp_path, HISTORY)
    assert path == tmp_path / rundir.METRICS
    assert path.read_text().splitlines() == [
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s",
        "1,2.1,0.2,1.9,0.31,0.05,1.25,4000",
        "2,1.51235,0.45,1.4,0.5,0.1,1.5,3900.5",
    ]
    rows = rundir.read_metrics(tmp_path)
    assert [list(r) for r in rows] == [list(rundir.METRIC_COLUMNS)] * 2
    assert rows[0]["epoch"] == 1 and isinstance(rows[0]["epoch"], int)
    assert rows[1]["train_loss"] == pytest.approx(1.51235)


def test_json_files_round_trip_sorted_and_indented(tmp_path: Path) -> None:
    config = {"trial": 3, "arch": {"stem_width": 16}, "data_source": "x.tar.gz"}
    rundir.write_config(tmp_path, config)
    assert (tmp_path / rundir.CONFIG).read_text() == json.dumps(config, indent=2,
                                                                 sort_keys=True) + "\n"
    assert rundir.read_config(tmp_path) == config
    rundir.write_summary(tmp_path, {"test_acc": 0.5})
    assert rundir.read_summary(tmp_path) == {"test_acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.CONFIG, rundir.SUMMARY]


@pytest.mark.parametrize(("content", "message"), [
    (None, "missing; a bare model.pt needs the config.json"),
    ("{not json", "unreadable"),
    ("[1, 2]", "not a run configuration"),
])
def test_a_bad_config_is_a_checkpoint_error_naming_the_file(
        tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / rundir.CONFIG).write_text(content)
    with pytest.raises(rundir.CheckpointError, match=message) as info:
        rundir.read_config(tmp_path)
    assert str(info.value).startswith(str(tmp_path / rundir.CONFIG))


def test_bad_metrics_and_a_missing_summary_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(rundir.CheckpointError, match="missing"):
        rundir.read_metrics(tmp_path)
    (tmp_path / rundir.METRICS).write_text("epoch,val_acc\n1,abc\n")
    with pytest.raises(rundir.CheckpointError, match="unreadable"):
        rundir.read_metrics(tmp_path)
    with pytest.raises(rundir.CheckpointError, match="has not finished"):
        rundir.read_summary(tmp_path)


def test_discard_removes_outputs_and_checkpoints_only(tmp_path: Path) -> None:
    for name in (*rundir.OUTPUTS, *rundir.CHECKPOINTS, "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "eval-cifar10").mkdir()
    assert rundir.discard(tmp_path) == [*rundir.CHECKPOINTS, *rundir.OUTPUTS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval-cifar10", "notes.txt"]
    assert rundir.discard(tmp_path) == []


def test_outputs_travel_as_bytes_and_only_outputs_are_accepted(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    for i, name in enumerate(rundir.OUTPUTS):
        (source / name).write_bytes(bytes([i]) * 3)
    files = rundir.read_outputs(source)
    rundir.write_outputs(target, files)
    assert rundir.read_outputs(target) == files
    with pytest.raises(ValueError, match=r"\.\./evil"):
        rundir.write_outputs(target, {"../evil": b""})


@pytest.mark.parametrize(("source", "folder"), [
    ("/data/cifar-10-python.tar.gz", "eval-cifar-10-python"),
    ("data/cifar10-jpeg.tgz", "eval-cifar10-jpeg"),
    ("/data/cifar10/", "eval-cifar10"),
    ("/", "eval-data"),
])
def test_evaluations_go_to_a_folder_named_after_the_data(source: str, folder: str) -> None:
    assert rundir.eval_dir(Path("runs/x/trial-1"), source) == Path("runs/x/trial-1") / folder


def test_a_run_folder_is_found_from_any_of_its_files(tmp_path: Path) -> None:
    assert rundir.folder_of(tmp_path) == tmp_path
    assert rundir.folder_of(tmp_path / rundir.MODEL) == tmp_path
    assert rundir.trial_dir(Path("runs"), "s", 7) == Path("runs/s/trial-7")


# -- trainers.locate ---------------------------------------------------------------------


def test_find_data_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ENV, "from-env")
    recorded = tmp_path / "recorded.tar.gz"
    recorded.write_bytes(b"")
    assert find_data("given", recorded=str(recorded)) == "given"
    assert find_data(None, recorded=str(recorded)) == "from-env"
    monkeypatch.delenv(DATA_ENV)
    assert find_data(None, recorded=str(recorded)) == str(recorded)
    Path(DATA_CANDIDATES[1]).mkdir(parents=True)
    assert find_data(None, recorded=str(tmp_path / "gone")) == DATA_CANDIDATES[1]


def test_no_data_is_a_data_error_saying_what_to_do(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError) as info:
        find_data(None)
    assert str(info.value) == (f"no data: pass --data PATH, set ${DATA_ENV}, or put the data "
                               f"at one of {', '.join(DATA_CANDIDATES)}")


HOLD = """
import sys, time
from pathlib import Path
from trainers import rundir
with rundir.locked(Path(sys.argv[1]), "promote of trial 3"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_locked_run_folder_names_its_holder_until_it_dies(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(rundir.RunFolderLocked) as caught, rundir.locked(run, "second"):
            pass
        assert str(caught.value).startswith(
            f"{run}: in use by promote of trial 3 (pid {holder.pid} on ")
        assert caught.value.holder["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The dead holder's file is still there and still names it, but blocks nobody.
    assert json.loads((run / rundir.LOCK).read_text())["pid"] == holder.pid
    with rundir.locked(run, "third"):
        assert json.loads((run / rundir.LOCK).read_text())["what"] == "third"
    with rundir.locked(run, "fourth"):  # and released again at the end of the block
        pass
