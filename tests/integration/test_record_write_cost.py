"""The database work behind each request (issue 17): a batch of request-log rows and their
attempts is a fixed number of statements whatever its size (COPY, not an INSERT per row),
a batch of continuity pins and its NOTIFYs is one statement, and neither needs the
transaction `Database.run` would open around it. What is stored is unchanged: the rows
read back hold the record's values, made storable; a batch written twice is not doubled.

Statements are counted from libpq's own trace of the messages the client sends (a Query or
an Execute each), on a real PostgreSQL."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import trio
from psycopg import pq
from psycopg._copy_base import TextFormatter
from psycopg.adapt import Transformer

from pooler import pricing, store
from pooler.actors.log_writer import LogWriter
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.protocol.usage import TokenUsage
from pooler.store import logs as log_store
from pooler.store.common import CONTINUITY_CHANNEL
from pooler.store.text import storable, storable_json
from pooler.web import runtime_store
from pooler.web.request_record import AttemptRecord, RequestRecord
from tests.integration.test_store import auth_json

POOL_ID = "9e2fc78f-24f4-4537-b523-e76a61c50bd5"
ACCOUNT_ID = "14bf61fb-2f59-459e-abae-29a5b87faf03"
ROUTING = {
    "strategy": "least_used",
    "candidates": [
        {"label": "account-3", "verdict": "chosen"},
        {"label": "account-1", "verdict": "skipped: ranked below the chosen account"},
    ],
    "continuity": "none",
}


def record(n: int, **changes: Any) -> RequestRecord:
    """A short request's record as the gateway fills it in (two attempts)."""
    fields: dict[str, Any] = {
        "created_at": 1_796_576_088.464093 + n,
        "started": 100.0,
        "pool_id": POOL_ID,
        "key_prefix": "sk-cxp-Dw1U3",
        "model": "gpt-5.5",
        "status_code": 200,
        "outcome": "completed",
        "account_id": ACCOUNT_ID,
        "account_label": "account-3",
        "retries": 1,
        "duration_ms": 6.0488450108096,
        "ttfb_ms": 6.020623026415706,
        "usage": TokenUsage(45, 0, 8, 0, 53),
        "exclusions": {"account-1": "rate_limited"},
        "user_agent": "codex_cli_rs/0.169.0",
        "attempts": [
            AttemptRecord(1, ACCOUNT_ID, "account-1", 100.001, 1.5, 429, "rate_limited"),
            AttemptRecord(2, ACCOUNT_ID, "account-3", 100.003, 1.7474, 200, "ok", None, None, 0.97),
        ],
        "continuity": "none",
        "client_ip": "127.0.0.1",
        "request_bytes": 166,
        "response_bytes": 635,
        "routing": ROUTING,
        **changes,
    }
    return RequestRecord(f"req_{n:024x}", "responses", "http_json", **fields)


@contextmanager
def statements(conn: psycopg.Connection[Any]) -> Iterator[Callable[[], int]]:
    """Count the statements `conn` sends (libpq's trace: one Query or Execute each)."""
    with tempfile.TemporaryFile(mode="w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        sent: list[int] = []
        try:
            yield lambda: sent[0]
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            lines = [line.split("\t") for line in trace.read().splitlines()]
            sent.append(sum(1 for p in lines if p[0] == "F" and p[2] in ("Query", "Execute")))


def write_counted(db_url: str, records: list[RequestRecord]) -> int:
    """Write `records` as the gateway does (autocommit: the writer makes its own
    transaction); the statements it took."""
    with psycopg.connect(db_url, autocommit=True) as conn, statements(conn) as count:
        runtime_store.write_request_records(conn, records, pricing.bundled())
    return count()


def test_a_batch_of_log_rows_takes_the_same_few_statements_whatever_its_size(
    db_url: str,
) -> None:
    few = write_counted(db_url, [record(n) for n in range(2)])
    many = write_counted(db_url, [record(n) for n in range(100, 160)])
    # BEGIN, a COPY of the rows, a COPY of their attempts, COMMIT (the old INSERT per row
    # and per attempt took 60 + 120 statements for the larger batch).
    assert few == many <= 4
    with psycopg.connect(db_url) as conn:
        assert log_store.count_request_logs(conn) == 62
        assert conn.execute("SELECT count(*) FROM request_attempts").fetchone() == (124,)


def test_stored_rows_hold_the_records_values_and_a_rewrite_doubles_nothing(
    database: Database, db_url: str
) -> None:
    hostile = record(
        7,
        user_agent="ua\x00\x1b[31m" + "é" * 600,
        model="m\u202e" * 150,
        exclusions={"acc\x00": "refused", "b": "x" * 300},
        routing={"strategy": 'q"uote', "n": float("nan"), "deep": [[[1, 2.5, True, None]]]},
        usage=None,
        client_request_id="cid\x7f",
    )
    plain = record(8, pool_id=None, account_id=None, attempts=[], routing=None, ttfb_ms=None)
    batch = [record(6), hostile, plain]
    write_counted(db_url, batch)
    # The same batch again (a retry after an outage that had in fact committed), with one
    # new record: the new one is stored, nothing is doubled, nothing is refused.
    write_counted(db_url, [*batch, record(9)])
    rows = {
        row.request_id: row
        for row in database.run_sync(lambda conn: log_store.recent_request_logs(conn, 10))
    }
    assert sorted(rows) == sorted(r.request_id for r in [*batch, record(9)])
    first = rows[record(6).request_id]
    assert first.created_at == datetime.fromtimestamp(record(6).created_at, UTC)
    assert (first.pool_id, first.account_id) == (UUID(POOL_ID), UUID(ACCOUNT_ID))
    assert (first.model, first.status_code, first.outcome, first.retries) == (
        "gpt-5.5",
        200,
        "completed",
        1,
    )
    assert (first.duration_ms, first.ttfb_ms) == (6.049, 6.021)
    assert (first.input_tokens, first.output_tokens, first.total_tokens) == (45, 8, 53)
    assert first.cost_usd == pricing.bundled().cost("gpt-5.5", 45, 0, 8)
    assert first.routing == ROUTING and first.exclusions == {"account-1": "rate_limited"}
    assert (first.request_bytes, first.response_bytes, first.client_ip) == (166, 635, "127.0.0.1")
    odd = rows[hostile.request_id]
    assert odd.client_user_agent == storable(hostile.user_agent, 512)
    assert odd.model == storable((hostile.model or "")[:200])
    assert odd.client_request_id == "cid\\x7f"
    assert odd.exclusions == storable_json(hostile.exclusions)
    assert odd.routing == storable_json(hostile.routing)
    assert odd.cost_usd is None and odd.input_tokens is None
    bare = rows[plain.request_id]
    assert bare.pool_id is None and bare.routing is None and bare.ttfb_ms is None
    attempts = database.run_sync(lambda conn: log_store.attempts_for(conn, first.request_id))
    assert [(a.attempt, a.outcome, a.status_code, a.account_label) for a in attempts] == [
        (1, "rate_limited", 429, "account-1"),
        (2, "ok", 200, "account-3"),
    ]
    assert attempts[1].started_at == datetime.fromtimestamp(
        record(6).created_at - 100.0 + 100.003, UTC
    )
    assert attempts[1].ttfb_ms == 0.97


def test_a_batch_of_pins_and_its_announcements_is_one_statement(
    database: Database, db_url: str, keyring: Keyring
) -> None:
    pool = database.run_sync(lambda c: store.create_pool(c, "team"))
    account = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json()))
    later = datetime.now(UTC) + timedelta(hours=1)
    pins = [store.ContinuityPin(pool.id, os.urandom(32), account.id, later) for _ in range(20)]
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CONTINUITY_CHANNEL}")
        with psycopg.connect(db_url, autocommit=True) as conn, statements(conn) as count:
            written = store.upsert_continuity_pins(conn, pins, "node1")
        assert written == 20
        assert count() == 1  # the old way: one statement per pin, and one per NOTIFY
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == [f"{pool.id}/node1"]
    stored = database.run_sync(lambda c: store.load_continuity_pins(c, pool.id))
    assert sorted(stored, key=lambda p: p.key_digest) == sorted(pins, key=lambda p: p.key_digest)


def test_the_last_pin_of_a_key_wins_within_a_batch(database: Database, keyring: Keyring) -> None:
    pool = database.run_sync(lambda c: store.create_pool(c, "team"))
    a = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json()))
    b = database.run_sync(
        lambda c: store.import_account(c, keyring, "team", auth_json("acct-2", "user-2"))
    )
    later = datetime.now(UTC) + timedelta(hours=1)
    digest = os.urandom(32)
    moved = [
        store.ContinuityPin(pool.id, digest, a.id, later),
        store.ContinuityPin(pool.id, digest, b.id, later + timedelta(minutes=1)),
    ]
    database.run_sync(lambda c: store.upsert_continuity_pins(c, moved))
    assert database.run_sync(lambda c: store.load_continuity_pins(c, pool.id)) == moved[1:]


async def test_an_autocommit_run_commits_and_hands_back_a_transactional_connection(
    db_url: str,
) -> None:
    db = Database.open(db_url, max_size=1)
    try:
        await db.run(
            lambda conn: conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)"),
            autocommit=True,
        )
        assert await db.run(lambda conn: conn.autocommit) is False
        assert await db.run(lambda conn: conn.execute("SELECT n FROM t").fetchall()) == [(1,)]
    finally:
        db.close()


async def test_a_stop_during_a_batch_write_loses_and_doubles_no_row(db_url: str) -> None:
    """The gateway stops (its LogWriter cancelled) while a batch is being written, as the
    gateway writes it (autocommit, the COPY in its own transaction): the write is cancelled
    in the server and rolled back, and the writer's final flush stores every row once."""
    db = Database.open(db_url, max_size=2)
    writing = trio.Event()

    async def write(batch: Sequence[RequestRecord]) -> None:
        writing.set()
        await db.run(lambda conn: runtime_store.write_request_records(conn, batch), autocommit=True)

    writer: LogWriter[RequestRecord] = LogWriter(write, batch_size=100)
    try:
        for n in range(300):
            writer.enqueue(record(n))
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await writing.wait()
                nursery.cancel_scope.cancel()
        assert writer.pending == 0 and writer.dropped == 0
        found = await db.run(
            lambda conn: conn.execute(
                "SELECT count(*), count(DISTINCT request_id) FROM request_logs"
            ).fetchone()
        )
        attempts = await db.run(
            lambda conn: conn.execute("SELECT count(*) FROM request_attempts").fetchone()
        )
    finally:
        db.close()
    assert found == (300, 300) and attempts == (600,)


def _python_calls_in_the_worker(database: Database, records: list[RequestRecord]) -> int:
    """Python function calls made in the worker thread while the gateway's log write of
    `records` runs there (counted by a profile hook set in that thread only)."""
    calls = [0]
    real_run = database.run

    async def counted_run(fn: Callable[[Any], Any], **options: Any) -> Any:
        def profiled(conn: Any) -> Any:
            def count(frame: Any, event: str, arg: Any) -> None:
                if event == "call":
                    calls[0] += 1

            sys.setprofile(count)
            try:
                return fn(conn)
            finally:
                sys.setprofile(None)

        return await real_run(profiled, **options)

    async def write() -> None:
        with trio.fail_after(30):
            await runtime_store.store_request_records(database, records, pricing.bundled())

    database.run = counted_run  # type: ignore[method-assign]
    try:
        trio.run(write)
    finally:
        del database.run
    return calls[0]


def test_the_worker_thread_runs_no_python_per_row_of_a_log_batch(database: Database) -> None:
    # Rows made into COPY lines in the worker thread kept it running Python (~40 µs a row)
    # while the event loop's thread waited for the GIL; they are made before it is entered.
    few = _python_calls_in_the_worker(database, [record(n) for n in range(300, 302)])
    many = _python_calls_in_the_worker(database, [record(n) for n in range(400, 460)])
    # The same calls whatever the batch's size, but for psycopg's waits on the socket.
    assert many < few + 30
    stored = database.run_sync(log_store.count_request_logs)
    assert stored == 62
    assert database.run_sync(
        lambda conn: conn.execute("SELECT count(*) FROM request_attempts").fetchone()
    ) == (124,)


def test_copy_lines_made_before_the_thread_are_the_bytes_write_row_sends(db_url: str) -> None:
    hostile = record(
        11,
        user_agent="ua\t\\\n\r\x1b" + "é" * 600,
        exclusions={"acc\x00": "refused"},
        routing={"n": float("nan"), "deep": [[[1, 2.5, True, None]]]},
        usage=None,
    )
    records = [record(10), hostile, record(12, ttfb_ms=None, attempts=[])]
    logs, attempts = runtime_store._record_values(records, pricing.bundled())
    with psycopg.connect(db_url) as conn:
        # The formatter a COPY of this connection writes its rows with (Copy.write_row).
        formatter = TextFormatter(Transformer(conn))
        for rows in (logs, attempts):
            expected = b"".join(bytes(formatter.write_row(values)) for values in rows)
            expected += bytes(formatter.end())
            assert log_store.copy_lines(rows) == expected
