"""`search run --warm-start OTHER[:K]`: another study's best trials queued first."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
import pytest

from search import record
from search.args import UsageError
from search.cli import warm_start
from tests.search import trainers
from tests.search.test_service import run, smoke_file

pytestmark = pytest.mark.usefixtures("shared_archive")


def test_the_best_trials_of_another_study_are_queued_first(tmp_path: Path) -> None:
    study = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    code, _ = run(study, url, "old", 8, baselines=False, trainer=trainers.instant)
    assert code == 0
    old = optuna.load_study(study_name="old", storage=url)
    top = record.best(old.trials, 3)
    assert len(top) == 3
    code, out = run(study, url, "new", 4, baselines=False, trainer=trainers.instant,
                    warm_start=("old", 3))
    assert code == 0, out
    assert "queued 3 of old's best trials" in out
    new = optuna.load_study(study_name="new", storage=url).trials
    assert [t.user_attrs.get("warm_start") for t in new[:3]] == [f"old#{t.number}" for t in top]
    assert [t.params for t in new[:3]] == [t.params for t in top]
    assert "warm_start" not in new[3].user_attrs  # then the sampler's own proposals
    with pytest.raises(UsageError, match="no such study"):
        run(study, url, "newer", 1, baselines=False, trainer=trainers.instant,
            warm_start=("nowhere", 3))


def test_a_trial_outside_this_space_is_skipped(tmp_path: Path) -> None:
    wide = smoke_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'narrow.db'}"
    code, _ = run(wide, url, "wide", 6, baselines=False, trainer=trainers.instant)
    assert code == 0
    narrow_dir = tmp_path / "narrow"
    narrow_dir.mkdir()
    narrow = smoke_file(narrow_dir, **{"width = [8, 16, 24, 32]": "width = [8]"})
    code, out = run(narrow, url, "narrow", 2, baselines=False, trainer=trainers.instant,
                    warm_start=("wide", 6))
    assert code == 0, out
    top = record.best(optuna.load_study(study_name="wide", storage=url).trials, 6)
    fits = [t.number for t in top
            if all(s["width"] == 8 for s in json.loads(t.system_attrs["arch"])["stages"])]
    assert len(fits) < len(top)  # the precondition: some do not fit
    assert f"queued {len(fits)} of wide's best trials" in out
    assert f"{len(top) - len(fits)} do not fit this space or budget" in out


def test_the_option_is_checked() -> None:
    assert warm_start("old") == ("old", 5) and warm_start("old:12") == ("old", 12)
    for bad in ("old:0", "old:x", ":3", "old:101"):
        with pytest.raises(argparse.ArgumentTypeError):
            warm_start(bad)
