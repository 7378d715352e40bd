"""The database goes away and comes back; the embedded server outlives short-lived users.

Each test here runs its own embedded server (it stops it), in a data dir outside pytest's
basetemp (see `embedded_data_dir`).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from pooler import embedded
from pooler.db import Database, DatabaseUnavailable, notify
from pooler.migrate import migrate


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = embedded.start_embedded_postgres(data_dir)

    def stop(self) -> None:
        embedded.stop_embedded_postgres(self.data_dir)

    def start(self) -> None:
        assert embedded.start_embedded_postgres(self.data_dir) == self.url


@pytest.fixture
def server(pg_data_dir: Path) -> Server:
    running = Server(pg_data_dir)
    migrate(running.url)
    return running


def select_one(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute("SELECT 1").fetchone()


async def test_run_fails_while_down_and_recovers(server: Server) -> None:
    db = Database.open(server.url, acquire_timeout=1.0)
    try:
        assert await db.run(select_one) == (1,)
        await trio.to_thread.run_sync(server.stop)
        with pytest.raises(DatabaseUnavailable):
            await db.run(select_one)
        assert not await db.ping()
        await trio.to_thread.run_sync(server.start)
        # The pool drops the dead connections and opens new ones (with its own backoff,
        # which a loaded machine stretches past one acquire timeout).
        with trio.fail_after(15):
            while True:
                try:
                    assert await db.run(select_one) == (1,)
                    break
                except DatabaseUnavailable:
                    await trio.sleep(0.2)
        assert await db.ping()
    finally:
        db.close()


async def test_listen_reconnects_after_restart(server: Server) -> None:
    db = Database.open(server.url, acquire_timeout=1.0)
    got: list[str] = []
    reconnected = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: db.listen(
                    "chan", got.append, on_reconnect=reconnected.set, task_status=task_status
                )
            )
            await trio.to_thread.run_sync(server.stop)
            await trio.sleep(0.5)  # the listener notices and backs off
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(10):
                await reconnected.wait()
            await db.run(lambda c: notify(c, "chan", "after restart"))
            with trio.fail_after(5):
                while not got:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert got == ["after restart"]
    finally:
        db.close()


async def test_listen_reconnects_after_its_backend_is_killed(server: Server) -> None:
    db = Database.open(server.url)
    got: list[str] = []
    reconnected = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: db.listen(
                    "chan", got.append, on_reconnect=reconnected.set, task_status=task_status
                )
            )
            killed = await db.run(
                lambda c: c.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
                ).fetchone()
            )
            assert killed == (1,)
            with trio.fail_after(10):
                await reconnected.wait()
            await db.run(lambda c: notify(c, "chan", "hello again"))
            with trio.fail_after(5):
                while not got:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert got == ["hello again"]
    finally:
        db.close()


# --- the shared embedded server and its users' lifetimes -----------------------------------

HOLDER = """
import sys
from pathlib import Path
from pooler.embedded import start_embedded_postgres
print(start_embedded_postgres(Path(sys.argv[1])), flush=True)
sys.stdin.read()  # hold the server until stdin closes
"""


def open_holder(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """A process (like `pooler serve`) that uses the embedded server until told to exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_once(data_dir: Path) -> str:
    """A short-lived process (like `pooler admin ...`) that uses the server and exits."""
    out = subprocess.run(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        input="",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def is_up(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def wait_down(url: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not is_up(url):
            return True
        time.sleep(0.1)
    return False


def test_short_lived_process_does_not_stop_a_server_in_use(pg_data_dir: Path) -> None:
    holder, url = open_holder(pg_data_dir)
    try:
        assert is_up(url)
        assert run_once(pg_data_dir) == url
        assert is_up(url)  # the CLI process exited; the holder still has the server
    finally:
        holder.communicate("", timeout=30)
    assert wait_down(url)  # the last user left: stopped


def test_server_started_by_a_short_lived_process_survives_for_the_holder(
    pg_data_dir: Path,
) -> None:
    url = run_once(pg_data_dir)  # starts the server, and stops it at exit: nobody else uses it
    assert not is_up(url)
    holder, url2 = open_holder(pg_data_dir)
    try:
        assert url2 == url
        assert run_once(pg_data_dir) == url
        assert is_up(url)
    finally:
        holder.communicate("", timeout=30)
    assert wait_down(url)


def test_a_killed_user_does_not_keep_the_server_forever(pg_data_dir: Path) -> None:
    holder, url = open_holder(pg_data_dir)
    holder.kill()  # no atexit: its pid stays in the handle list
    holder.wait(10)
    assert is_up(url)
    assert embedded.start_embedded_postgres(pg_data_dir) == url
    embedded.release_embedded_postgres(pg_data_dir)  # the dead pid was pruned: we are last
    assert wait_down(url)


def test_deep_data_dir_gets_a_short_socket_path(pg_data_dir: Path) -> None:
    deep = pg_data_dir.joinpath(*(["d" * 40] * 4))
    assert len(str(deep / "pg" / ".s.PGSQL.5432")) > 107
    try:
        url = embedded.start_embedded_postgres(deep)
        host = conninfo_to_dict(url)["host"]
        assert len(f"{host}/.s.PGSQL.5432") <= 107
        assert is_up(url)
        assert stat.S_IMODE(os.stat(host).st_mode) == 0o700  # trust auth: keep others out
    finally:
        embedded.release_embedded_postgres(deep)
    assert wait_down(url)
