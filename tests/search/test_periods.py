"""The heartbeat, grace and poll periods: environment knobs for tests and operators.

The fault tests (`tests/search/test_faults.py`) show that the knobs reach the worker
processes: a killed worker's trial is failed within their short grace period, not
the default 30 s. Here: the values are checked, and a wrong one is one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.cli import main
from search.executors.base import POLL_ENV, POLL_S, PlacementError, poll_s
from search.storage import (
    GRACE_ENV,
    GRACE_S,
    HEARTBEAT_ENV,
    HEARTBEAT_S,
    StorageError,
    heartbeat_periods,
    open_storage,
)


def test_the_defaults_hold_without_the_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (HEARTBEAT_ENV, GRACE_ENV, POLL_ENV):
        monkeypatch.delenv(name, raising=False)
    assert heartbeat_periods() == (HEARTBEAT_S, GRACE_S) == (10, 30)
    assert poll_s() == POLL_S


def test_the_knobs_set_the_periods_of_a_worker_store(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, "0.5")
    monkeypatch.setenv(GRACE_ENV, " 2 ")
    monkeypatch.setenv(POLL_ENV, "0.25")
    assert heartbeat_periods() == (0.5, 2.0)
    assert poll_s() == 0.25
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert (storage.heartbeat_interval, storage.grace_period) == (0.5, 2.0)
    reader = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=False)
    assert reader.heartbeat_interval is None


@pytest.mark.parametrize(("heartbeat", "grace", "message"), [
    ("abc", "", r"\$SEARCH_HEARTBEAT_S: must be a number of seconds > 0, got 'abc'"),
    ("0", "", r"\$SEARCH_HEARTBEAT_S: must be a number of seconds > 0, got '0'"),
    ("", "-4", r"\$SEARCH_GRACE_S: must be a number of seconds > 0, got '-4'"),
    ("", "nan", r"\$SEARCH_GRACE_S: must be a number of seconds > 0, got 'nan'"),
    ("", "inf", r"\$SEARCH_GRACE_S: must be a number of seconds > 0, got 'inf'"),
    ("5", "5", r"\$SEARCH_GRACE_S: the grace period \(5 s\) must be longer than the "
               r"heartbeat period \(5 s, \$SEARCH_HEARTBEAT_S\)"),
    ("", "8", r"grace period \(8 s\) must be longer than the heartbeat period \(10 s"),
])
def test_wrong_periods_are_refused(heartbeat: str, grace: str, message: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, heartbeat)
    monkeypatch.setenv(GRACE_ENV, grace)
    with pytest.raises(StorageError, match=message):
        heartbeat_periods()


@pytest.mark.parametrize("value", ["fast", "0", "-1", "nan"])
def test_a_wrong_poll_period_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL_ENV, value)
    with pytest.raises(PlacementError, match=rf"\$SEARCH_POLL_S: .* got '{value}'"):
        poll_s()


def test_a_command_with_a_wrong_knob_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="mini", storage=url)
    monkeypatch.setenv(GRACE_ENV, "soon")
    code = main(["trials", "--storage", url, "--study-name", "mini"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "search: error: $SEARCH_GRACE_S: must be a number of seconds > 0, " \
                  "got 'soon'\n"
