"""The round trips `Database.run` makes around the work it is given (issue 17): a pooled
connection handed back moments ago is handed out again without the pool's check query,
and one whose session the server ended is still never handed out.

Statements are counted from libpq's own trace (`statements`), on a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from pooler.db import Database
from tests.integration.test_record_write_cost import statements


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
