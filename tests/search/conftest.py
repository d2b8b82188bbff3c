"""Stores for the search tests: an SQLite file and a fresh database on the real
Postgres server at 127.0.0.1:5432 (created for the test session, dropped after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import psycopg2

    name = f"search_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(**PG_ADMIN, connect_timeout=10)
    except psycopg2.OperationalError as err:
        missing(f"the Postgres server at 127.0.0.1:5432 is not reachable: {err}",
                "SEARCH_REQUIRE_POSTGRES")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        # A fresh connection: a test may have restarted the server meanwhile.
        admin = psycopg2.connect(**PG_ADMIN, connect_timeout=30)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One test body, both stores (each test its own study name on Postgres)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))
