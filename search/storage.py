"""The study store: an Optuna RDB storage named by a URL.

Embedded default: an SQLite file under ``runs/<study>/``. The service form is
Postgres (``postgresql+psycopg2://user:password@host/db``), given with
``--storage`` or the ``SEARCH_STORAGE`` environment variable. Each process opens
its own connection from the URL (engines do not travel between processes);
``pool_pre_ping`` lets a worker live through a database restart.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
import warnings
import zlib
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.pool import NullPool

STORAGE_ENV = "SEARCH_STORAGE"
RUNS_DIR = Path("runs")
HEARTBEAT_S = 10  # seconds between a running trial's heartbeats
GRACE_S = 30  # a trial silent this long belongs to a dead worker: FAIL, then retried
MAX_RETRY = 3  # re-runs of a dead worker's parameters


class StorageError(ValueError):
    """A storage URL that cannot be used; the message masks the password."""


def resolve_storage_url(url: str | None, study: str, *, create: bool = True) -> str:
    """``url``, else ``$SEARCH_STORAGE``, else ``sqlite:///runs/<study>/study.db``.

    Raises:
        StorageError: ``create`` is False and the default SQLite file does not exist
            (a command that only reads must not make an empty store).
    """
    url = url or os.environ.get(STORAGE_ENV) or ""
    if url:
        return url
    path = (RUNS_DIR / study / "study.db").resolve()
    if not create and not path.exists():
        raise StorageError(f"no store at {path}: run `search run --study {study}` first, "
                           f"or pass --storage URL (or set ${STORAGE_ENV})")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for printing."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparseable storage URL>"


class _Storage(RDBStorage):
    """RDBStorage whose heartbeat outlives a database restart.

    Optuna records heartbeats from a thread that ends on the first error; after a
    restart of the database the trial would then look dead although it still
    trains. A missed beat is only logged here, and the next one reconnects.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            print(f"search: heartbeat of trial id {trial_id} missed ({type(err).__name__}); "
                  "retrying", file=sys.stderr, flush=True)


def open_storage(url: str, *, heartbeat: bool = True) -> RDBStorage:
    """An Optuna storage for ``url``; workers use ``heartbeat=True``.

    With heartbeats on, a trial whose worker died turns FAIL once its heartbeat is
    ``GRACE_S`` old, and its parameters are enqueued again (up to ``MAX_RETRY``).

    Raises:
        StorageError: the URL is malformed or the database cannot be reached.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage: not a database URL: {mask_url(url)}") from None
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # Several worker processes share one file: wait for its lock, do not fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_recycle"] = 300
    kwargs: dict[str, object] = {}
    try:
        with warnings.catch_warnings():
            # Heartbeats are "experimental" in Optuna 5, and the only way to detect a dead
            # worker; the retry callback's older name is deprecated.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                          "heartbeat_stale_trial_callback":
                              RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
            return _Storage(url, engine_kwargs=engine_kwargs, **kwargs)  # type: ignore[arg-type]
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StorageError(f"storage {mask_url(url)}: cannot open ({detail})") from None


def load_study(url: str, name: str) -> optuna.Study:
    """An existing study, or `StorageError` naming the studies the store has."""
    storage = open_storage(url, heartbeat=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        known = ", ".join(names) or "none"
        raise StorageError(f"study {name!r} is not in {mask_url(url)} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)


def set_finished_trial_attrs(url: str, study_name: str, number: int,
                             attrs: dict[str, object]) -> None:
    """Set user attributes on a trial that has already finished.

    Optuna refuses to change a finished trial through its API, but a promoted
    trial's results belong on the trial, where the dashboard shows them. So this
    writes Optuna's own user-attribute table directly, in one transaction.
    """
    import json

    from optuna.storages._rdb import models

    storage = open_storage(url, heartbeat=False)
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    table = models.TrialUserAttributeModel.__table__
    with storage.engine.begin() as conn:
        for key, value in attrs.items():
            conn.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id,
                                                        table.c.key == key))
            conn.execute(sqlalchemy.insert(table).values(trial_id=trial_id, key=key,
                                                         value_json=json.dumps(value)))


class StartLock:
    """Serialises "count the trials, then create one" across the workers of a study.

    Without it, two workers that count at the same moment both start a last trial
    and the study ends past ``--n-trials``. SQLite stores use an advisory file lock
    beside the database file, Postgres a session advisory lock keyed by the study
    name; other databases go without (a rare extra trial). The lock is held only
    until the new trial exists (milliseconds), not while it trains.
    """

    def __init__(self, url: str, study_name: str) -> None:
        parsed = sqlalchemy.engine.make_url(url)
        self._backend = parsed.get_backend_name()
        self._key = zlib.crc32(f"search:{study_name}".encode()) & 0x7FFFFFFF
        self._path = Path(parsed.database or "") if self._backend == "sqlite" else None
        self._engine = (sqlalchemy.create_engine(url, pool_pre_ping=True, poolclass=NullPool)
                        if self._backend == "postgresql" else None)
        self._held: object = None

    def acquire(self) -> None:
        if self._path is not None and str(self._path) not in ("", ":memory:"):
            handle = open(f"{self._path}.lock", "a+b")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = handle
        elif self._engine is not None:
            for attempt in range(5):  # the server may be restarting
                try:
                    conn = self._engine.connect()
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                    self._held = conn
                    return
                except sqlalchemy.exc.OperationalError:
                    if attempt == 4:
                        raise
                    time.sleep(2.0)

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if isinstance(held, sqlalchemy.engine.Connection):
            try:
                held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            except sqlalchemy.exc.OperationalError:
                pass  # a dead connection has released its locks already
            finally:
                held.close()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)  # type: ignore[arg-type]
            held.close()  # type: ignore[attr-defined]
