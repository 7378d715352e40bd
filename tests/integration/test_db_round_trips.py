"""The database work around each flush of request logs (issue 17): a pooled connection
handed back moments ago is handed out again without the pool's check query (one whose
session the server ended is still never handed out), and a log batch's own transaction
commits without waiting for the WAL flush, set up in the round trip of its BEGIN.

Statements are counted from libpq's own trace (`statements`), on a real PostgreSQL."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import trio
from psycopg import pq

from pooler.db import Database
from pooler.store import logs as log_store
from pooler.web import runtime_store
from tests.integration.test_record_write_cost import record, statements


async def test_a_connection_handed_back_moments_ago_is_reused_without_a_check_query(
    db_url: str,
) -> None:
    db = Database.open(db_url, max_size=1)  # one connection: every run gets the same one
    try:
        await db.run(lambda conn: None)  # opened, checked once, handed back
        with statements(await db.run(lambda conn: conn)) as count:
            for _ in range(10):
                await db.run(lambda conn: None, autocommit=True)
        # The pool's check is an empty query per acquisition: 10 with the old check.
        assert count() == 0
        assert db.fresh is not None and db.fresh.round_trips == 1
    finally:
        db.close()


async def test_a_connection_whose_session_the_server_ended_is_not_handed_out(
    db_url: str,
) -> None:
    db = Database.open(db_url, max_size=1)
    try:
        first = await db.run(lambda conn: conn.info.backend_pid)
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            with trio.fail_after(10):
                while admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,)
                ).fetchone():
                    await trio.sleep(0.01)

        def backend(conn: psycopg.Connection[Any]) -> int:
            return int(conn.info.backend_pid)

        # The pool saw the closed session (its socket readable), dropped it, opened another.
        second = await db.run(backend)
        assert second != first
        assert await db.run(backend) == second
    finally:
        db.close()


@contextmanager
def sent_queries(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """The statements `conn` sends (libpq's trace: a Query's text, or "Execute" for one sent
    by the extended protocol), filled in at exit."""
    with tempfile.TemporaryFile(mode="w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        queries: list[str] = []
        try:
            yield queries
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            lines = [line.split("\t") for line in trace.read().splitlines()]
            queries.extend(
                p[3] if p[2] == "Query" else p[2]
                for p in lines
                if p[0] == "F" and p[2] in ("Query", "Execute")
            )


def test_a_log_batch_commits_without_waiting_for_the_wal_flush(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        setting = conn.execute("SHOW synchronous_commit").fetchone()
        with sent_queries(conn) as queries:
            runtime_store.write_request_records(conn, [record(n) for n in range(3)])
        # Its own transaction, set up in one round trip: BEGIN with the setting, the two
        # COPYs, COMMIT (as many statements as before).
        assert len(queries) == 4
        assert "synchronous_commit TO off" in queries[0] and "BEGIN" in queries[0]
        # The session's own setting is untouched (the tests' server has it off anyway).
        assert conn.execute("SHOW synchronous_commit").fetchone() == setting
        assert log_store.count_request_logs(conn) == 3


def test_a_log_batch_in_a_callers_transaction_keeps_its_setting(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        with sent_queries(conn) as queries, conn.transaction():
            runtime_store.write_request_records(conn, [record(n) for n in range(2)])
        assert not any("synchronous_commit" in q for q in queries)
        assert log_store.count_request_logs(conn) == 2
