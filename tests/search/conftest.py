"""Stores for the search tests: an SQLite file and a fresh database on the real
Postgres server at 127.0.0.1:5432 (created for the test session, dropped after)."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from search.cli import main
from search.run import RunOptions, run_search
from tests.conftest import SHARED_ARCHIVE, missing, need_shared_archive
from tests.search.smoke import FINAL, SECRET, Searched, fresh_thread_count
from tests.search.test_service import smoke_file
from trainers import CifarData, load_cifar10

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


# A real smoke search and its promoted trial 1, shared by the modules on what comes after a
# search (tests/search/smoke.py has the helpers).
@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    need_shared_archive()
    root = tmp_path_factory.mktemp("promote")
    # Search on 600 images; the [final] recipe trains on 2,000 for 2 epochs.
    study = smoke_file(root, **{"[final]\nepochs = 2\ntrain_subset = 3000": FINAL})
    url = f"sqlite:///{root / 'study.db'}"
    code = run_search(RunOptions(study=str(study), storage=url, study_name="promo", n_trials=2,
                                 workers=1, executor="local", data=str(SHARED_ARCHIVE),
                                 device="cpu", seed=0, tensorboard=str(root / "tb")),
                      io.StringIO())
    assert code == 0
    store = optuna.load_study(study_name="promo", storage=url)
    assert [t.state for t in store.trials] == [TrialState.COMPLETE] * 2
    store.add_trial(create_trial(
        state=TrialState.PRUNED, params={"stages": 3}, distributions={
            "stages": IntDistribution(2, 3)}, user_attrs={"rejected_reason": "41,000 > 40,000"}))
    return Searched(study, url, "promo", root)


@pytest.fixture(scope="session")
def data() -> CifarData:
    return load_cifar10(SHARED_ARCHIVE)


@pytest.fixture(scope="session")
def promote_output(searched: Searched) -> tuple[Path, str]:
    """Trial 1 promoted with the study's [final] recipe (2 epochs), through a store URL
    that carries a password in its query string; the run folder and what it printed."""
    out = searched.root / "trial-1"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), fresh_thread_count():
        code = main(searched.argv(1, "--out", str(out), "--tensorboard",
                                  str(searched.root / "tb"),
                                  url=f"{searched.url}?password={SECRET}"))
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


@pytest.fixture(scope="session")
def promoted(promote_output: tuple[Path, str]) -> Path:
    return promote_output[0]
