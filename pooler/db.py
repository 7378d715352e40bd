"""The one door to PostgreSQL: a psycopg connection pool driven from worker threads.

psycopg's async API is asyncio-only, so Trio code reaches the synchronous driver through
`Database.run(fn)`: `fn(conn)` runs in a worker thread (at most `max_size` at once, under a
`trio.CapacityLimiter`), inside one transaction that commits when `fn` returns and rolls back
when it raises.

Cancellation. `run` never abandons its thread (`abandon_on_cancel=True` would return control
while the thread may still be about to COMMIT a write: the caller could not know whether it
happened, and the connection would be in use after the caller had moved on). Instead, when
the calling task is cancelled, `run` asks the server to cancel the statement in progress
(`PQcancel`, sent from another thread) and waits for the worker to finish: the transaction
rolls back and `run` raises `trio.Cancelled`, promptly. If the worker had already finished
its transaction, `run` returns its result and the cancellation is seen at the caller's next
checkpoint (Trio's rule: an operation that raised Cancelled did not happen).

Errors. psycopg never leaks past this module:

    DatabaseError                 any other database failure (syntax, ...)
    ├── DatabaseUnavailable       cannot reach or use the server: connection refused or
    │                             lost, pool timeout, admin shutdown, statement timeout
    └── DatabaseDataError         the values were refused (a NUL in text, a CHECK or unique
                                  constraint, a number out of range): the same values
                                  will be refused again, retrying cannot help

Exceptions raised by `fn` itself (StoreError, ...) propagate unchanged, after rollback.
Messages carry the SQLSTATE and primary message only: DETAIL lines can quote row values.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import outcome
import psycopg
import psycopg_pool
import trio
from psycopg import errors as pg_errors
from psycopg import sql

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_ACQUIRE_TIMEOUT: Final = 5.0
PING_TIMEOUT_MS: Final = 2000
LISTEN_BACKOFF_INITIAL: Final = 0.2
LISTEN_BACKOFF_MAX: Final = 5.0
# A pooled connection handed back within this many seconds is handed out again without a
# round trip unless its socket has something to read (see `FreshConnections`).
CHECK_IDLE_AFTER_S: Final = 5.0
_CONNECT_KWARGS: Final[dict[str, Any]] = {"connect_timeout": 5, "application_name": "pooler"}


class DatabaseError(Exception):
    """A database operation failed (and its transaction rolled back)."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or used right now; retrying later may work."""


class DatabaseDataError(DatabaseError):
    """The database (or the driver, before sending) refused the values themselves."""


def map_error(exc: BaseException) -> BaseException:
    """The exception to raise in place of `exc` at this edge (non-psycopg: unchanged)."""
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return DatabaseUnavailable(f"database unavailable: {exc}")
    if not isinstance(exc, psycopg.Error):
        return exc
    sqlstate = exc.sqlstate
    primary = exc.diag.message_primary if sqlstate else None
    text = f"{sqlstate}: {primary}" if primary else _first_line(exc)
    if isinstance(exc, pg_errors.TransactionRollback):
        return DatabaseError(f"transaction conflict ({text})", sqlstate=sqlstate)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(f"database unavailable ({text})", sqlstate=sqlstate)
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return DatabaseDataError(f"database refused the values ({text})", sqlstate=sqlstate)
    return DatabaseError(f"database error ({text})", sqlstate=sqlstate)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def notify(conn: psycopg.Connection[Any], channel: str, payload: str) -> None:
    """NOTIFY `channel` with `payload`, delivered when the surrounding transaction commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class _Call:
    """One `run` in flight: the connection it uses, so a cancellation can reach it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self.cancel_requested = False
        self.cancel_sent = False

    def attach(self, conn: psycopg.Connection[Any]) -> bool:
        with self._lock:
            if self.cancel_requested:
                return False
            self._conn = conn
            return True

    def detach(self) -> bool:
        """Forget the connection; True if a cancel request was sent to its backend (then
        the connection must not be reused: a late cancel could hit the next query)."""
        with self._lock:
            self._conn = None
            return self.cancel_sent

    def request_cancel(self) -> None:
        """Called from the Trio thread; the cancel request itself is sent from a worker."""
        with self._lock:
            self.cancel_requested = True
            if self._conn is None:
                return
            trio.lowlevel.start_thread_soon(self._send_cancel, lambda _result: None)

    def _send_cancel(self) -> None:
        # Holding the lock keeps the worker from handing the connection back meanwhile.
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            self.cancel_sent = True
            try:
                conn.cancel_safe(timeout=5.0)
            except psycopg.Error:
                log.debug("cancel request failed", exc_info=True)


class _CancelledBeforeStart(Exception):
    pass


class FreshConnections:
    """The pool's check of a connection it is about to hand out: psycopg_pool's own (an
    empty query, a round trip and ~25 µs of the server's CPU), skipped when the connection
    was handed back within CHECK_IDLE_AFTER_S and its socket holds nothing to read.

    Every request-log and pin flush acquires a connection, and the server answering the
    check runs on the CPU the gateway needs. A server that ended the session (restart,
    `pg_terminate_backend`, an idle timeout) sent an error and closed the socket, which
    makes it readable: the full check runs and the pool drops the connection, as before.
    An idle pooled connection is sent nothing else (none of them LISTENs). Only a peer gone
    silently (a network cut) goes unseen for the window's few seconds: the statement then
    fails as DatabaseUnavailable, as it would had the cut come just after the check."""

    def __init__(self) -> None:
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # the pool's worker threads check and hand back
        self.round_trips = 0  # the checks that did query the server

    def returned(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._returned_at[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """Return quietly if `conn` can be handed out; raise if not (the pool drops it)."""
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("the connection is closed")
        with self._lock:
            returned = self._returned_at.get(conn)
        if returned is not None and time.monotonic() - returned < CHECK_IDLE_AFTER_S:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            if not poller.poll(0):
                return
        self.round_trips += 1
        psycopg_pool.ConnectionPool.check_connection(conn)


class Database:
    """A psycopg `ConnectionPool` used from Trio through worker threads."""

    def __init__(
        self,
        url: str,
        pool: psycopg_pool.ConnectionPool[Any],
        *,
        acquire_timeout: float,
        fresh: FreshConnections | None = None,
    ) -> None:
        self.url = url
        self._pool = pool
        self.fresh = fresh  # the pool's check, when it is ours (`open`)
        self._acquire_timeout = acquire_timeout
        self._limiter = trio.CapacityLimiter(pool.max_size)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> Database:
        """Open the pool without waiting for the server: a database that is down at start
        shows up as `DatabaseUnavailable` from `run` (after `acquire_timeout` seconds)."""
        fresh = FreshConnections()
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            kwargs=dict(_CONNECT_KWARGS),
            min_size=min_size,
            max_size=max_size,
            open=False,
            check=fresh.check,
            timeout=acquire_timeout,
            name="pooler",
        )
        pool.open(wait=False)
        return cls(url, pool, acquire_timeout=acquire_timeout, fresh=fresh)

    def close(self) -> None:
        self._pool.close()

    def run_sync(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(conn)` in one transaction, in the calling thread (CLI, tests, migrations)."""
        return self._work(fn, _Call(), self._acquire_timeout)

    async def run(
        self, fn: Callable[[psycopg.Connection[Any]], T], *, autocommit: bool = False
    ) -> T:
        """`fn(conn)` in one transaction in a worker thread; see the module doc on
        cancellation. Raises DatabaseUnavailable / DatabaseError, or what `fn` raised.

        `autocommit`: `fn` runs a single statement (atomic on its own) or makes its own
        transactions (`conn.transaction()`), so this one's BEGIN and COMMIT, two round
        trips, are saved (the request-log and pin writes run many times a second)."""
        return await self._run(fn, self._acquire_timeout, autocommit)

    async def ping(self) -> bool:
        """Readiness: can we get a connection and run `SELECT 1` within ~2 s?"""

        def select_one(conn: psycopg.Connection[Any]) -> bool:
            conn.execute(f"SET LOCAL statement_timeout = {PING_TIMEOUT_MS}")
            return conn.execute("SELECT 1").fetchone() == (1,)

        try:
            return await self._run(select_one, PING_TIMEOUT_MS / 1000)
        except DatabaseError:
            return False

    async def _run(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        acquire_timeout: float,
        autocommit: bool = False,
    ) -> T:
        call = _Call()
        async with self._limiter:
            token = trio.lowlevel.current_trio_token()
            task = trio.lowlevel.current_task()

            def deliver(result: outcome.Outcome[T]) -> None:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

            def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
                call.request_cancel()
                return trio.lowlevel.Abort.FAILED  # keep waiting for the worker to finish

            trio.lowlevel.start_thread_soon(
                lambda: self._work(fn, call, acquire_timeout, autocommit), deliver
            )
            try:
                result: T = await trio.lowlevel.wait_task_rescheduled(abort)
            except BaseException:
                if call.cancel_requested:
                    await trio.lowlevel.checkpoint()  # raises Cancelled: nothing happened
                raise
            return result

    def _work(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        call: _Call,
        acquire_timeout: float,
        autocommit: bool = False,
    ) -> T:
        try:
            with self._pool.connection(timeout=acquire_timeout) as conn:
                if not call.attach(conn):
                    raise _CancelledBeforeStart
                try:
                    if autocommit:
                        return _autocommitted(conn, fn)
                    with conn.transaction():
                        return fn(conn)
                finally:
                    if call.detach():
                        conn.close()  # the pool discards it
                    elif self.fresh is not None:
                        self.fresh.returned(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise map_error(exc) from exc

    async def listen(
        self,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN on one channel; see `listen_channels`."""
        await self.listen_channels(
            (channel,),
            lambda _channel, payload: on_notify(payload),
            on_reconnect=on_reconnect,
            task_status=task_status,
        )

    async def listen_channels(
        self,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN on `channels` until cancelled, calling `on_notify(channel, payload)` on the
        Trio thread for each notification.

        Holds its own connection (outside the pool). Reports started once LISTEN is active;
        if the first connection fails, the error (DatabaseUnavailable) comes out of
        `nursery.start`. Later the connection is re-established with exponential backoff,
        and `on_reconnect()` is called once LISTEN is active again: notifications sent while
        disconnected are lost, so the listener should reload what it caches. An exception
        from a callback ends the task. Cancellation is prompt: the wait is a Trio wait on
        the connection's socket, not a thread.
        """
        names = ",".join(channels)
        conn = await self._listen_connect(channels)
        task_status.started()
        reconnected = False
        while True:
            try:
                if reconnected and on_reconnect is not None:
                    on_reconnect()
                await _pump_notifications(conn, on_notify)
            except DatabaseUnavailable as exc:
                log.warning("LISTEN %s: connection lost (%s); reconnecting", names, exc)
            finally:
                _close_listen_connection(conn)
            conn = await self._listen_reconnect(channels)
            reconnected = True

    async def _listen_reconnect(self, channels: Sequence[str]) -> psycopg.Connection[Any]:
        backoff = LISTEN_BACKOFF_INITIAL
        while True:
            await trio.sleep(backoff)
            try:
                return await self._listen_connect(channels)
            except DatabaseUnavailable as exc:
                log.info("LISTEN %s: reconnect failed (%s)", ",".join(channels), exc)
            backoff = min(backoff * 2, LISTEN_BACKOFF_MAX)

    async def _listen_connect(self, channels: Sequence[str]) -> psycopg.Connection[Any]:
        def connect() -> psycopg.Connection[Any]:
            try:
                conn = psycopg.connect(self.url, autocommit=True, **_CONNECT_KWARGS)
            except psycopg.Error as exc:
                raise map_error(exc) from exc
            try:
                for channel in channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except psycopg.Error as exc:
                conn.close()
                raise map_error(exc) from exc
            return conn

        # Not abandoned on cancel: connect_timeout bounds it, and the connection is closed.
        return await trio.to_thread.run_sync(connect)


def _autocommitted(conn: psycopg.Connection[Any], fn: Callable[[psycopg.Connection[Any]], T]) -> T:
    """`fn(conn)` in autocommit mode; the connection goes back to the pool as it came (a
    broken one is discarded by the pool)."""
    conn.autocommit = True
    try:
        return fn(conn)
    finally:
        try:
            if not conn.closed and not conn.broken:
                conn.autocommit = False
        except psycopg.Error:  # not idle: never hand it to the next caller in autocommit
            conn.close()


async def _pump_notifications(
    conn: psycopg.Connection[Any], on_notify: Callable[[str, str], None]
) -> None:
    """Wait on the socket in Trio; read notifications without blocking when it is readable."""
    fd = conn.fileno()
    while True:
        try:
            payloads = [(n.channel, n.payload) for n in conn.notifies(timeout=0)]
        except psycopg.Error as exc:
            raise map_error(exc) from exc
        if conn.broken or conn.closed:
            raise DatabaseUnavailable("database unavailable (LISTEN connection lost)")
        for channel, payload in payloads:
            on_notify(channel, payload)
        await trio.lowlevel.wait_readable(fd)


def _close_listen_connection(conn: psycopg.Connection[Any]) -> None:
    # A broken connection's socket may already be closed by libpq (and its number reused):
    # only tell Trio about a socket that is still ours.
    if not conn.closed and not conn.broken:
        with contextlib.suppress(psycopg.Error, OSError):
            trio.lowlevel.notify_closing(conn.fileno())
    conn.close()
