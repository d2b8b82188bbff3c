"""A real smoke search and its promoted trial, shared by the modules that test what
comes after a search (promote, evaluate, predict, TensorBoard, artifacts, the dashboard)."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from search.run import RunOptions, run_search
from tests.conftest import SHARED_ARCHIVE
from tests.search.test_service import smoke_file

# A pinned, sane full recipe: the smoke search's own trials (600 images, 1-2 epochs) learn
# nothing, and a network that answers one class for every image cannot tell swapped ids,
# wrong weights or a wrong test-time augmentation from right ones. Test-time flips on, so
# that a prediction made without them differs.
FINAL = """[final]
epochs = 2
train_subset = 2000
optimizer = "sgd"
lr = 0.1
batch_size = 64
schedule = "onecycle"
label_smoothing = 0.0
cutout = 0
tta_flip = true"""
SECRET = "s3cr3t-pw"  # in the promoted run's store URL, which must never be shown


@dataclass(frozen=True)
class Searched:
    """A finished smoke search in an SQLite file: trials 0 (baseline) and 1 are COMPLETE."""

    study: Path
    url: str
    name: str
    root: Path

    def argv(self, trial: int, *extra: str, url: str | None = None) -> list[str]:
        return ["promote", str(trial), "--study", str(self.study), "--storage", url or self.url,
                "--study-name", self.name,
                "--data", str(SHARED_ARCHIVE), "--device", "cpu", *extra]


EACH_EPOCH = ("--epochs", "3", "--checkpoint-every", "1")  # 3 epochs, a checkpoint after each
SMOKE_FINAL = "[final]\nepochs = 2\ntrain_subset = 3000"  # the smoke study's own [final]


def smoke_search(root: Path, name: str, final: str, n_trials: int = 1) -> Searched:
    """A finished smoke search (workers=1, seed 0, baselines first) in an SQLite file under
    ``root``, its study file's [final] table replaced by ``final``."""
    study = smoke_file(root, **{SMOKE_FINAL: final})
    url = f"sqlite:///{root / 'study.db'}"
    code = run_search(RunOptions(study=str(study), storage=url, study_name=name,
                                 n_trials=n_trials, workers=1, executor="local",
                                 data=str(SHARED_ARCHIVE), device="cpu", seed=0), io.StringIO())
    assert code == 0
    return Searched(study, url, name, root)


@functools.cache
def fresh_threads() -> int:
    """torch's thread count in a fresh process (CPU results depend on it)."""
    return int(subprocess.run([sys.executable, "-c", "import torch; "
                               "print(torch.get_num_threads())"],
                              capture_output=True, text=True, check=True).stdout)


@contextmanager
def fresh_thread_count() -> Iterator[int]:
    """While inside, this process trains with `fresh_threads` threads, whatever an earlier
    test set: runs trained here then match the ones of a subprocess or a Ray task."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(fresh_threads())
    try:
        yield fresh_threads()
    finally:
        torch.set_num_threads(threads)
