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

from search.args import env_seconds
from search.dburl import StorageError, engine_kwargs, error_detail, mask_url, parse_url

STORAGE_ENV = "SEARCH_STORAGE"
RUNS_DIR = Path("runs")
HEARTBEAT_S = 10  # seconds between a running trial's heartbeats
GRACE_S = 30  # a trial silent this long belongs to a dead worker: FAIL, then retried
MAX_RETRY = 3  # re-runs of a dead worker's parameters
CREATE_TRIES = 4  # opens of a new database whose tables another process is making too
# Test and operations knobs: $SEARCH_HEARTBEAT_S and $SEARCH_GRACE_S replace the two
# periods above (the fault tests shorten them, so that a dead worker shows in seconds).
# Read each time a store is opened, so the workers (subprocesses, Ray tasks started
# from this process) see them through the environment; every process of a study must.
HEARTBEAT_ENV, GRACE_ENV = "SEARCH_HEARTBEAT_S", "SEARCH_GRACE_S"


def heartbeat_periods() -> tuple[float, float]:
    """(heartbeat, grace) in seconds: `HEARTBEAT_S`, `GRACE_S` or their environment knobs.

    Raises:
        StorageError: a knob is not a number of seconds > 0, or the grace period is not
            longer than the heartbeat period (a live trial would be failed between beats).
    """
    heartbeat = env_seconds(HEARTBEAT_ENV, HEARTBEAT_S, StorageError)
    grace = env_seconds(GRACE_ENV, GRACE_S, StorageError)
    if grace <= heartbeat:
        raise StorageError(f"${GRACE_ENV}: the grace period ({grace:g} s) must be longer than "
                           f"the heartbeat period ({heartbeat:g} s, ${HEARTBEAT_ENV})")
    return heartbeat, grace


def resolve_storage_url(url: str | None, study: str, *, create: bool = True) -> str:
    """``url``, else ``$SEARCH_STORAGE``, else ``sqlite:///runs/<study>/study.db``.

    Raises:
        StorageError: ``create`` is False and the SQLite file does not exist (a command
            that only reads must not make an empty store, not even for a mistyped
            ``--storage`` path); the study name is not a plain name (it names a folder
            under ``runs/``); the store's folder cannot be made.
    """
    from space.spec import study_name_problem

    problem = study_name_problem(study)
    if problem:
        raise StorageError(f"study name: {problem}")
    url = url or os.environ.get(STORAGE_ENV) or ""
    if url:
        path = sqlite_path(url)
        if not create and path is not None and not path.exists():
            raise StorageError(f"no store at {path}: the file does not exist (check the path "
                               "of --storage, or $" + STORAGE_ENV + ")")
        return url
    path = (RUNS_DIR / study / "study.db").resolve()
    if not create and not path.exists():
        raise StorageError(f"no store at {path}: run `search run --study {study}` first, "
                           f"or pass --storage URL (or set ${STORAGE_ENV})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot make the store folder {path.parent}: "
                           f"{err.strerror or err}") from None
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL; None for other databases and in-memory SQLite."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # an SQLite URI (?uri=true): left to SQLite
        return None
    return Path(parsed.database).resolve()


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
        StorageError: the URL is malformed, the database cannot be reached, or a
            heartbeat knob is wrong (checked on every open, so the driver says so first).
    """
    beat_s, grace_s = heartbeat_periods()
    options = engine_kwargs(parse_url(url))
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"store {path}: the folder {path.parent} does not exist "
                           "or is not a folder")
    kwargs: dict[str, object] = {}
    try:
        with warnings.catch_warnings():
            # Heartbeats are "experimental" in Optuna 5, and the only way to detect a dead
            # worker; the retry callback's older name is deprecated.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                kwargs = {"heartbeat_interval": beat_s, "grace_period": grace_s,
                          "heartbeat_stale_trial_callback":
                              RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
            for attempt in range(1, CREATE_TRIES):
                try:
                    return _Storage(url, engine_kwargs=options, **kwargs)  # type: ignore[arg-type]
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                    # Two processes making Optuna's tables in a new database at once (two
                    # `search run` on a fresh Postgres database): the loser's CREATE or
                    # version row fails, but the tables are there now.
                    time.sleep(0.2 * attempt)
            return _Storage(url, engine_kwargs=options, **kwargs)  # type: ignore[arg-type]
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        where = path or mask_url(url)
        raise StorageError(f"store {where}: cannot open ({error_detail(err, url)})") from None


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
        parsed = parse_url(url)
        self._url = url
        self._backend = parsed.get_backend_name()
        self._key = zlib.crc32(f"search:{study_name}".encode()) & 0x7FFFFFFF
        self._path = Path(parsed.database or "") if self._backend == "sqlite" else None
        self._engine = (sqlalchemy.create_engine(url, poolclass=NullPool, **engine_kwargs(parsed))
                        if self._backend == "postgresql" else None)
        self._held: object = None

    def acquire(self) -> None:
        if self._path is not None and str(self._path) not in ("", ":memory:"):
            try:
                handle = open(f"{self._path}.lock", "a+b")
            except OSError as err:  # a read-only store folder, say
                raise StorageError(f"store {self._path}: cannot create the lock file beside "
                                   f"it: {err.strerror or err}") from None
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = handle
        elif self._engine is not None:
            for attempt in range(5):  # the server may be restarting
                try:
                    conn = self._engine.connect()
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                    self._held = conn
                    return
                except sqlalchemy.exc.OperationalError as err:
                    if attempt == 4:
                        raise StorageError(f"store {mask_url(self._url)}: cannot take the start "
                                           f"lock ({error_detail(err, self._url)})") from err
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
