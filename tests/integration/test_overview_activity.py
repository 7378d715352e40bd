"""The overview's one read of the request log (`store.overview.recent_activity`) against real
Postgres: counts, errors, cached share and the added-latency percentiles of each Pool
asked about, over the window only, and its plan stays on the `(pool_id, created_at)`
index."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from pooler.db import Database
from pooler.store.overview import PoolActivity, recent_activity

ROW = (
    "INSERT INTO request_logs (request_id, created_at, pool_id, route, status_code, outcome,"
    " ttfb_ms, input_tokens, cached_input_tokens)"
    " VALUES (%s, now() - %s, %s, 'responses', %s, %s, %s, %s, %s)"
)
ATTEMPT = (
    "INSERT INTO request_attempts (request_id, attempt, started_at, outcome, ttfb_ms)"
    " VALUES (%s, %s, now(), 'ok', %s)"
)


def log(
    conn: Any,
    pool: UUID,
    *,
    ago: timedelta = timedelta(seconds=10),
    status: int = 200,
    outcome: str = "completed",
    ttfb: float | None = None,
    upstream_ttfb: tuple[float | None, ...] = (),
    tokens: tuple[int, int] = (0, 0),
) -> None:
    request_id = uuid4().hex
    conn.execute(ROW, (request_id, ago, pool, status, outcome, ttfb, *tokens))
    for attempt, value in enumerate(upstream_ttfb, 1):
        conn.execute(ATTEMPT, (request_id, attempt, value))


async def test_each_pools_activity_over_the_window(database: Database) -> None:
    busy, quiet, absent = uuid4(), uuid4(), uuid4()

    def fill(conn: Any) -> None:
        # Added latency = the client's time to first byte minus the serving (last)
        # attempt's: 10 requests adding 1..10 ms; the first attempt of one failed over.
        for added in range(1, 11):
            log(conn, busy, ttfb=100.0 + added, upstream_ttfb=(100.0,), tokens=(100, 25))
        log(conn, busy, ttfb=500.0, upstream_ttfb=(None, 495.0))  # adds 5 ms
        log(conn, busy, status=503, outcome="rejected")  # no attempt: no latency sample
        log(conn, busy, status=200, outcome="stream_failed", ttfb=50.0)  # no attempt ttfb
        log(conn, busy, status=499, outcome="client_disconnected")  # the client left
        log(conn, busy, status=400, outcome="rejected", tokens=(0, 0))
        log(conn, busy, ago=timedelta(minutes=6), status=500, outcome="failed")  # too old
        log(conn, quiet, ago=timedelta(minutes=30))

    await database.run(fill)
    found = await database.run(lambda conn: recent_activity(conn, [busy, quiet, absent]))
    assert set(found) == {busy, quiet, absent}
    assert found[quiet] == found[absent] == PoolActivity()
    got = found[busy]
    assert (got.requests, got.errors) == (15, 3)  # 503, the broken stream, the 400
    assert (got.input_tokens, got.cached_tokens) == (1000, 250)
    assert got.added_p50_ms == pytest.approx(5.0)
    assert got.added_p95_ms == pytest.approx(9.5)
    assert await database.run(lambda conn: recent_activity(conn, [])) == {}


async def test_the_read_stays_on_the_pool_index(database: Database) -> None:
    from pooler.store import overview

    def plan(conn: Any) -> str:
        conn.execute("SET LOCAL enable_seqscan = off")  # as on a big table
        rows = conn.execute(
            "EXPLAIN " + overview._ACTIVITY_SQL,
            {"ids": [uuid4()], "window": timedelta(minutes=5), "sample": 1000},
        ).fetchall()
        return "\n".join(row[0] for row in rows)

    shown = await database.run(plan)
    assert "request_logs_pool_created_id_idx" in shown  # migration 0013
    assert "request_attempts_pkey" in shown
