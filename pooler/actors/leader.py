"""The cluster's leader, chosen through PostgreSQL: who runs the once-per-cluster jobs.

Every node that may lead holds one dedicated connection (outside the pool, autocommit) and
asks for a session-level advisory lock with `pg_try_advisory_lock` (it never waits on the
lock). The node that gets it leads: it runs `lead()` until it stops leading. The others ask
again every `retry_s` seconds.

The lock belongs to the connection's backend, so it goes away with the connection: a
leader killed with SIGKILL closes its socket, the server ends the backend and frees the
lock, and the next node to ask leads within `retry_s`. The leader checks its own
connection every `check_s` seconds (`SELECT 1`, at most `check_timeout_s`); the moment it
fails, `lead()` is cancelled and the connection dropped, before any other node could have
the lock. Server-side TCP keepalives (set on the session) make the server notice a leader
that vanished from the network without closing its socket.

Every wait is bounded: the connect by `connect_timeout`, each statement by
`check_timeout_s` (the thread running it is abandoned past that, and the connection's
socket shut down, which ends the thread's wait). Cancelling `run` stops `lead()` and
closes the connection (releasing the lock) within a shielded, bounded cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

import psycopg
import trio

log = logging.getLogger("pooler.leader")

# The advisory lock's key (any bigint all nodes agree on): "cdxpool1" as an integer.
LEADER_LOCK_KEY: Final = 0x6364_7870_6F6F_6C31
RETRY_S: Final = 2.0
CHECK_S: Final = 1.0
CHECK_TIMEOUT_S: Final = 3.0
CLOSE_TIMEOUT_S: Final = 2.0
CONNECT_S: Final = 5
_CONNECT_KWARGS: Final[dict[str, Any]] = {
    "connect_timeout": CONNECT_S,
    "application_name": "pooler-leader",
    "autocommit": True,
    # The client side notices a dead server within ~15 s even with no statement running.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# The server side notices a vanished leader within ~11 s and frees its lock.
_SERVER_KEEPALIVES: Final = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)


class LostConnection(Exception):
    """The election connection failed or did not answer in time."""


class Leader:
    """Takes part in the election until cancelled; `is_leader` says whether this node leads
    right now (read by /metrics)."""

    def __init__(
        self,
        url: str,
        lead: Callable[[], Awaitable[None]],
        *,
        key: int = LEADER_LOCK_KEY,
        node: str = "",
        retry_s: float = RETRY_S,
        check_s: float = CHECK_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.lead = lead
        self.key = key
        self.node = node
        self.retry_s = retry_s
        self.check_s = check_s
        self.check_timeout_s = check_timeout_s
        self.is_leader = False
        self.terms = 0  # how many times this node became leader

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ready at once (leading is not needed to serve); runs until cancelled."""
        task_status.started()
        while True:
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = await self._bounded(self._connect, self.check_timeout_s + CONNECT_S)
                await self._wait_for_lock(conn)
                await self._lead_while_connected(conn)
            except LostConnection as exc:
                log.info("leader election: %s; trying again in %.0f s", exc, self.retry_s)
            finally:
                self.is_leader = False
                if conn is not None:
                    await _close(conn)
            await trio.sleep(self.retry_s)

    async def _wait_for_lock(self, conn: psycopg.Connection[Any]) -> None:
        try_lock = partial_lock(conn, self.key)
        while True:
            if await self._bounded(try_lock, self.check_timeout_s):
                return
            await trio.sleep(self.retry_s)

    async def _lead_while_connected(self, conn: psycopg.Connection[Any]) -> None:
        self.is_leader = True
        self.terms += 1
        log.warning("leader: this node%s now runs the once-per-cluster jobs", self._named())
        lost = LostConnection("the connection was lost")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.lead)
                try:
                    while True:
                        await trio.sleep(self.check_s)
                        await self._bounded(partial_check(conn), self.check_timeout_s)
                except LostConnection as exc:
                    lost = exc
                    nursery.cancel_scope.cancel()  # lead() stops at once
        finally:
            self.is_leader = False
            log.warning("leader: this node%s no longer leads", self._named())
        raise lost

    def _named(self) -> str:
        return f" ({self.node})" if self.node else ""

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, **_CONNECT_KWARGS)
        try:
            for statement in _SERVER_KEEPALIVES:
                conn.execute(statement)
        except psycopg.Error:
            conn.close()
            raise
        return conn

    async def _bounded(self, fn: Callable[[], Any], seconds: float) -> Any:
        """`fn()` in a worker thread, at most `seconds`; a database error or a timeout is a
        LostConnection."""
        with trio.move_on_after(seconds):
            try:
                return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
            except psycopg.Error as exc:
                raise LostConnection(_describe(exc)) from None
        raise LostConnection("the database did not answer in time")


def partial_lock(conn: psycopg.Connection[Any], key: int) -> Callable[[], bool]:
    def try_lock() -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        return bool(row and row[0])

    return try_lock


def partial_check(conn: psycopg.Connection[Any]) -> Callable[[], None]:
    def check() -> None:
        conn.execute("SELECT 1")

    return check


async def _close(conn: psycopg.Connection[Any]) -> None:
    """Close the connection (the server frees the lock), shielded and bounded. The socket
    is shut down first: the server sees the end at once, and a worker thread still blocked
    on the connection (abandoned by a timeout) fails and lets go of it, so the connection
    is closed under its own lock, never under that thread's feet."""
    _shut_down_socket(conn)
    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
        await trio.to_thread.run_sync(_close_quietly, conn, abandon_on_cancel=True)


def _shut_down_socket(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        if conn.closed:
            return
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()  # the duplicate only; the connection's own descriptor stays


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    if not conn.lock.acquire(timeout=CLOSE_TIMEOUT_S):
        return  # still in use: left to the garbage collector
    try:
        with contextlib.suppress(psycopg.Error, OSError):
            conn.close()
    finally:
        conn.lock.release()


def _describe(exc: psycopg.Error) -> str:
    # SQLSTATE and first line only: a server message could quote values.
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{exc.sqlstate}: {first}" if exc.sqlstate else first
