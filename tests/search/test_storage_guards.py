"""The store under hostile input: a server that never answers, credentials in the URL,
read-only folders, malformed and mistyped URLs. Each ends in one line and exit code 2
(Ctrl-C: 130), never a hang or a traceback, and no secret is printed or written."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.storage import mask_url
from tests.conftest import SHARED_ARCHIVE, need_shared_archive

SEARCH = Path(sys.executable).parent / "search"
SECRET = "s3cr3t-Pw"


def search(*argv: str, cwd: Path, timeout: float = 120,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SEARCH), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def assert_one_line(err: str, *parts: str) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("search: error: "), err
    for part in parts:
        assert part in lines[0], (part, err)


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# -- a Postgres address that accepts and never answers ----------------------------------


def test_a_server_that_never_answers_is_one_line_naming_it(silent: SilentServer,
                                                           tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:{silent.port}/db"
    start = time.monotonic()
    proc = search("trials", "--storage", url, cwd=tmp_path, timeout=60,
                  SEARCH_DB_CONNECT_TIMEOUT_S="2")
    assert time.monotonic() - start < 15
    assert proc.returncode == 2
    assert_one_line(proc.stderr, f"127.0.0.1:{silent.port}", "did not answer")
    assert SECRET not in proc.stderr + proc.stdout


def test_ctrl_c_ends_a_command_waiting_on_a_silent_server(silent: SilentServer,
                                                          tmp_path: Path) -> None:
    # A long connect timeout: only an interruptible wait can end within seconds.
    proc = subprocess.Popen([str(SEARCH), "trials", "--storage",
                             f"postgresql+psycopg2://u@127.0.0.1:{silent.port}/db"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "SEARCH_DB_CONNECT_TIMEOUT_S": "120"})
    try:
        assert silent.accepted.wait(60), "search never connected"
        time.sleep(0.5)  # inside the wait for the server's answer
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130
    assert err == "search: interrupted\n"


# -- credentials in the URL -------------------------------------------------------------

CREDENTIAL_URLS = [
    pytest.param(f"postgresql+psycopg2://u:{SECRET}@h:5432/db", id="userinfo"),
    pytest.param(f"postgresql+psycopg2://u@h/db?password={SECRET}", id="query-password"),
    pytest.param(f"postgresql+psycopg2://u@h/db?PassWord={SECRET}", id="query-case"),
    pytest.param(f"postgresql+psycopg2://u@h/db?sslpassword={SECRET}", id="sslpassword"),
    pytest.param(f"postgresql+psycopg2://u@h/db?passwd={SECRET}", id="passwd"),
    pytest.param(f"postgresql+psycopg2://u@h/db?pwd={SECRET}", id="pwd"),
    pytest.param(f"postgresql+psycopg2://u@h/db?api_token={SECRET}", id="token"),
    pytest.param(f"postgresql+psycopg2://u@h/db?client_secret={SECRET}", id="secret"),
    pytest.param(f"postgresql+psycopg2://u@h/db?access_key={SECRET}", id="key"),
    pytest.param(f"postgresql+psycopg2://u@h/db?password=a&password={SECRET}", id="repeated"),
    pytest.param(f"postgresql+psycopg2://u:{SECRET}@h:notaport/db", id="unparseable"),
    pytest.param(f"://u:{SECRET}@h/db", id="no-scheme"),
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_mask_url_hides_every_credential_form(url: str) -> None:
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked or masked == "<unparseable storage URL>"


def test_mask_url_keeps_what_is_not_secret() -> None:
    url = f"postgresql+psycopg2://user:{SECRET}@db.example:6543/study?sslmode=require"
    assert mask_url(url) == "postgresql+psycopg2://user:***@db.example:6543/study?sslmode=require"


PG_FORMS = [
    pytest.param("postgresql+psycopg2://postgres:{s}@127.0.0.1:5432/{db}", id="userinfo"),
    pytest.param("postgresql+psycopg2://postgres@127.0.0.1:5432/{db}?password={s}", id="query"),
    pytest.param("postgresql+psycopg2://postgres@127.0.0.1:5432/{db}?sslpassword={s}"
                 "&PASSWORD={s}", id="two-queries"),
    pytest.param("postgresql+psycopg2://postgres:{s}@127.0.0.1:5x32/{db}", id="bad-port"),
]


@pytest.mark.parametrize("form", PG_FORMS)
def test_the_cli_prints_no_credential_on_a_store_error(form: str, tmp_path: Path) -> None:
    """A database that does not exist on the real server: the error names the store."""
    url = form.format(s=SECRET, db="no_such_db_" + uuid.uuid4().hex[:8])
    with socket.socket() as probe:  # a free port, so that only the store can fail
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    # trials, best and report share one way into the store; the dashboard has its own
    for command in (["trials"], ["dashboard", "--port", port]):
        proc = search(*command, "--storage", url, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_run_with_a_password_in_the_query_writes_it_nowhere(postgres_url: str,
                                                              tmp_path: Path) -> None:
    """The whole run: what it prints, every file it writes, every row of the store."""
    need_shared_archive()
    url = f"{postgres_url}?password={SECRET}&application_name=h5"
    name = f"creds-{uuid.uuid4().hex[:8]}"
    proc = search("run", "--study", "smoke", "--study-name", name, "--storage", url,
                  "--n-trials", "1", "--executor", "local", "--workers", "1", "--device", "cpu",
                  "--data", str(SHARED_ARCHIVE), "--trainer", "tests.search.trainers:instant",
                  cwd=tmp_path, timeout=300, PYTHONPATH=str(Path(__file__).parents[2]))
    assert proc.returncode == 0, proc.stderr
    assert "password=***" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    dump = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only",
                           postgres_url.rsplit("/", 1)[1]], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert name in dump and SECRET not in dump


# -- malformed, mistyped and unwritable stores --------------------------------------------


@pytest.mark.parametrize("command", ["trials", "run"])
def test_a_non_numeric_port_is_one_line(command: str, tmp_path: Path) -> None:
    proc = search(command, "--storage", f"postgresql+psycopg2://u:{SECRET}@h:54x2/db",
                  cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "port must be a number", "'54x2'")
    assert SECRET not in proc.stderr


@pytest.mark.parametrize("command", ["trials", "best", "report", "dashboard"])
def test_reading_commands_make_no_sqlite_file_for_a_mistyped_path(command: str,
                                                                  tmp_path: Path) -> None:
    missing = tmp_path / "x" / "missing.db"
    proc = search(command, "--storage", f"sqlite:///{missing}", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "no store at", str(missing))
    assert not missing.exists() and not missing.parent.exists()


def test_run_where_runs_is_a_file_is_one_line(tmp_path: Path) -> None:
    """A regular file where the store folder must go fails for root too (file modes don't)."""
    (tmp_path / "runs").write_text("not a folder")
    proc = search("run", "--study", "smoke", "--n-trials", "1", "--executor", "local",
                  "--device", "cpu", "--data", str(tmp_path / "nodata"), cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, str(tmp_path / "runs" / "smoke"), "Not a directory")


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A folder holding a study's store that cannot be written to.

    Root ignores file modes, so as root the folder is made immutable (``chattr +i``),
    which binds root too; the test skips where the file system refuses that.
    """
    import optuna

    folder = tmp_path / "store"
    folder.mkdir()
    optuna.create_study(study_name="ro", storage=f"sqlite:///{folder / 'study.db'}")
    folder.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:
            chattr = shutil.which("chattr")
            if chattr is None or subprocess.run([chattr, "+i", str(folder)],
                                                capture_output=True).returncode != 0:
                pytest.skip("running as root, and chattr +i is not available here")
            immutable = True
        try:
            (folder / "probe").touch()
        except OSError:
            pass
        else:
            pytest.skip(f"{folder} is still writable")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_run_on_a_store_in_a_read_only_folder_is_one_line(read_only_store: Path,
                                                          tmp_path: Path) -> None:
    need_shared_archive()
    proc = search("run", "--study", "smoke", "--study-name", "ro", "--storage",
                  f"sqlite:///{read_only_store / 'study.db'}", "--n-trials", "1",
                  "--executor", "local", "--device", "cpu", "--data", str(SHARED_ARCHIVE),
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert_one_line(proc.stderr, str(read_only_store))


# -- what every Postgres connection carries ---------------------------------------------


def test_postgres_connections_carry_the_statement_timeout(postgres_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    from search.storage import StartLock, open_storage

    monkeypatch.setenv("SEARCH_DB_STATEMENT_TIMEOUT_S", "1.5")
    storage = open_storage(postgres_url, heartbeat=False)
    lock = StartLock(postgres_url, "any")
    lock.acquire()
    try:
        for engine in (storage.engine, lock._engine):
            assert engine is not None
            with engine.connect() as conn:
                show = conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar()
                assert show == "1500ms"
                with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
                    conn.execute(sqlalchemy.text("SELECT pg_sleep(30)"))
    finally:
        lock.release()


@pytest.mark.parametrize("value", ["soon", "0", "inf"])
def test_a_bad_timeout_variable_is_one_line(value: str, tmp_path: Path) -> None:
    proc = search("trials", "--storage", "postgresql+psycopg2://u@127.0.0.1:1/db",
                  cwd=tmp_path, SEARCH_DB_CONNECT_TIMEOUT_S=value)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "$SEARCH_DB_CONNECT_TIMEOUT_S", repr(value), "seconds > 0")


def test_scrub_removes_the_urls_secrets_from_a_driver_message() -> None:
    from search.dburl import scrub

    url = f"postgresql+psycopg2://u:{SECRET}@h/db?sslpassword=other%2Fone"
    text = f"invalid dsn: password={SECRET} sslpassword=other/one sslpassword=other%2Fone"
    assert scrub(text, url) == "invalid dsn: password=*** sslpassword=*** sslpassword=***"
