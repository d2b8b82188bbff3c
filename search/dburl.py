"""The store's URL: parsing it, showing it without secrets, and the connection options.

A URL may carry credentials in its user part and in query parameters (``?password=``,
``?sslpassword=``, ...): `mask_url` hides both wherever a URL is shown, and `scrub`
takes them out of a driver's error message. Postgres connections time out
(`engine_kwargs`), so that a server that accepts and never answers cannot hang a
command, and Ctrl-C works while one waits.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from typing import Any

import sqlalchemy

from search.args import env_seconds


class StorageError(ValueError):
    """A storage URL that cannot be used; the message masks the password."""


CONNECT_TIMEOUT_ENV = "SEARCH_DB_CONNECT_TIMEOUT_S"
STATEMENT_TIMEOUT_ENV = "SEARCH_DB_STATEMENT_TIMEOUT_S"
CONNECT_TIMEOUT_S = 10.0  # a database server silent this long while connecting is not coming
STATEMENT_TIMEOUT_S = 300.0  # far above any query of a search; beyond it the server is hung
MAX_TIMEOUT_S = 86400.0  # the knobs above: longer is a typo, not a setting
LIBPQ_DRIVERS = ("psycopg2", "psycopg")  # drivers that take libpq's connection parameters
# Query parameters whose values are masked: password, sslpassword, passwd, pwd, token, ...
SECRET_KEY_PARTS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")


def parse_url(url: str) -> sqlalchemy.engine.URL:
    """``make_url``, with a `StorageError` that does not echo the URL (it may hold a password)."""
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage: not a database URL: {mask_url(url)}") from None
    except ValueError:  # the port: make_url calls int() on it
        where = url.partition("://")[2].rpartition("@")[2].partition("/")[0].partition("?")[0]
        port = where.partition("]")[2] if where.startswith("[") else where
        if ":" not in port:
            raise StorageError(f"storage URL: cannot read its host and port {where!r}") from None
        raise StorageError("storage URL: the port must be a number, got "
                           f"{port.rpartition(':')[2]!r}") from None


def _is_secret(key: str) -> bool:
    return any(part in key.lower() for part in SECRET_KEY_PARTS)


def mask_url(url: str) -> str:
    """The URL with its password and every secret-looking query value as ``***``."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<unparseable storage URL>"
    text = parsed.set(query={}).render_as_string(hide_password=True)
    pairs = [(key, "***" if _is_secret(key) else value)
             for key, values in parsed.query.items()
             for value in ((values,) if isinstance(values, str) else values)]
    return text + ("?" + "&".join(f"{key}={value}" for key, value in pairs) if pairs else "")


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with every secret of ``url`` replaced by ``***``."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<error message withheld: it may contain the storage URL>" if url else text
    secrets = [parsed.password or ""]
    for key, values in parsed.query.items():
        if _is_secret(key):
            secrets += [values] if isinstance(values, str) else list(values)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
            text = text.replace(form, "***")
    return text


def engine_kwargs(parsed: sqlalchemy.engine.URL) -> dict[str, object]:
    """Engine options: SQLite waits for the file lock; Postgres connections time out.

    A Postgres address that accepts connections but never answers once hung a command
    for good: libpq waits forever by default, and Ctrl-C is not seen while it waits. So
    psycopg2 waits in Python (`_wait`, interruptible, with deadlines), the server ends
    statements after ``$SEARCH_DB_STATEMENT_TIMEOUT_S`` and TCP keepalives find a dead
    peer.
    """
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # Several worker processes share one file: wait for its lock, do not fail.
        kwargs["connect_args"] = {"timeout": 60}
        return kwargs
    kwargs["pool_recycle"] = 300
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in LIBPQ_DRIVERS:
        connect_s = env_seconds(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S, StorageError,
                                high=MAX_TIMEOUT_S)
        statement_s = env_seconds(STATEMENT_TIMEOUT_ENV, STATEMENT_TIMEOUT_S, StorageError,
                                  high=MAX_TIMEOUT_S)
        options = parsed.query.get("options", "")
        options = " ".join(options) if isinstance(options, tuple) else options
        kwargs["connect_args"] = {
            "connect_timeout": max(2, math.ceil(connect_s)),  # libpq's floor is 2 s
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": f"{options} -c statement_timeout={math.ceil(statement_s * 1000)}".strip(),
        }
        if parsed.get_driver_name() == "psycopg2":  # psycopg 3 waits in Python already
            _install_wait()
    return kwargs


def _install_wait() -> None:
    """Make psycopg2 wait in Python, where Ctrl-C works and a silent server meets a deadline."""
    import psycopg2.extensions

    psycopg2.extensions.set_wait_callback(_wait)


def _wait_limit(conn: Any, setup: bool) -> float | None:
    """Seconds a connection may wait for the server, from its own parameters (so stores
    opened with other settings, and connections made elsewhere, keep theirs): its
    ``connect_timeout`` while it connects; afterwards the server's statement timeout
    plus that, as the server's own timeout answers first unless the server is hung."""
    params = conn.info.dsn_parameters
    connect = float(params.get("connect_timeout") or 0) or None
    if setup:
        return connect
    match = re.search(r"statement_timeout=(\d+)", params.get("options") or "")
    if match is None:
        return None
    return int(match.group(1)) / 1000 + (connect or CONNECT_TIMEOUT_S)


def _wait(conn: Any) -> None:
    """psycopg2's wait callback: poll the connection until done or past its deadline."""
    import select

    import psycopg2
    import psycopg2.extensions as ext

    setup = conn.status == ext.STATUS_SETUP
    limit = _wait_limit(conn, setup)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        fd = conn.fileno()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if any(select.select([fd] if state == ext.POLL_READ else [],
                             [fd] if state == ext.POLL_WRITE else [], [], left)):
            continue
        where = f"{conn.info.host}:{conn.info.port}"
        raise psycopg2.OperationalError(
            f"the database server at {where} did not answer within {limit:g} s"
            + (f" (${CONNECT_TIMEOUT_ENV})" if setup else ""))


def error_detail(err: BaseException, url: str) -> str:
    """The first line of a database error, without SQLAlchemy's prefix or the URL's secrets
    (a driver's message may quote its connection string)."""
    if isinstance(err, ImportError) and isinstance(err.__cause__, ImportError):
        return f"{err.__cause__}: the URL names a database driver that is not installed"
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return scrub(lines[0], url) if lines else type(orig).__name__
