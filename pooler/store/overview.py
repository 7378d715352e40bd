"""What the console's overview reads from the database: each Pool's recent activity (the
request log over the last minutes, every node's rows), and whether the session watching the
overview's live stream is still signed in, without moving its idle clock.

Activity is one statement for every Pool asked about, on the `(pool_id, created_at)` index:
the counts and token sums go over the window's rows, the latency percentiles over at most
`LATENCY_SAMPLE` of the newest (each looked up in `request_attempts` by its primary key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.crypto import key_digest
from pooler.store.common import Conn
from pooler.store.console_sessions import MAX_TOKEN_LEN
from pooler.store.models import Operator
from pooler.store.operators import OPERATOR_COLUMNS, visible_pool_ids
from pooler.store.text import findable

ACTIVITY_WINDOW: Final = timedelta(minutes=5)
LATENCY_SAMPLE: Final = 1000

# An error: an answer with an error status (a client that went away is not one), or an
# answer that started well and failed (a broken stream, an upstream failure).
_ERROR = (
    "(status_code >= 400 AND status_code <> 499)"
    " OR outcome NOT IN ('completed', 'client_disconnected')"
)
_ACTIVITY_SQL: Final = f"""
SELECT s.pool_id, c.requests, c.errors, c.input_tokens, c.cached_tokens, l.p50, l.p95
FROM unnest(%(ids)s::uuid[]) AS s (pool_id)
CROSS JOIN LATERAL (
    SELECT count(*) AS requests,
           count(*) FILTER (WHERE {_ERROR}) AS errors,
           coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
           coalesce(sum(cached_input_tokens), 0)::bigint AS cached_tokens
    FROM request_logs
    WHERE pool_id = s.pool_id AND created_at >= now() - %(window)s
) c
CROSS JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY added) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY added) AS p95
    FROM (
        SELECT greatest(0, r.ttfb_ms - a.ttfb_ms)::float8 AS added
        FROM (
            SELECT request_id, ttfb_ms FROM request_logs
            WHERE pool_id = s.pool_id AND created_at >= now() - %(window)s
              AND ttfb_ms IS NOT NULL
            ORDER BY created_at DESC LIMIT %(sample)s
        ) r
        CROSS JOIN LATERAL (
            SELECT ttfb_ms FROM request_attempts
            WHERE request_id = r.request_id ORDER BY attempt DESC LIMIT 1
        ) a
        WHERE a.ttfb_ms IS NOT NULL
    ) samples
) l
"""


@dataclass(frozen=True, slots=True)
class PoolActivity:
    """A Pool's requests over the window. Added latency: the time to the client's first
    byte minus the serving attempt's own time to the upstream's first byte, i.e. what the
    gateway (admission, routing, failover, relaying) added; None without a sample."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    added_p50_ms: float | None = None
    added_p95_ms: float | None = None


def recent_activity(
    conn: Conn, pool_ids: Sequence[UUID], window: timedelta = ACTIVITY_WINDOW
) -> dict[UUID, PoolActivity]:
    """Each Pool's activity over the last `window` (every node's rows), one statement."""
    if not pool_ids:
        return {}
    rows = conn.execute(
        _ACTIVITY_SQL, {"ids": list(pool_ids), "window": window, "sample": LATENCY_SAMPLE}
    ).fetchall()
    return {
        pool_id: PoolActivity(int(requests), int(errors), int(inputs), int(cached), p50, p95)
        for pool_id, requests, errors, inputs, cached, p50, p95 in rows
    }


@dataclass(frozen=True, slots=True)
class Watcher:
    """The operator of a signed-in session, and the Pools it may see now (None: all)."""

    session_id: UUID
    operator: Operator
    pool_ids: frozenset[UUID] | None


def watching_session(
    conn: Conn, secret_key: bytes, token: str, idle_timeout: timedelta
) -> Watcher | None:
    """The fully signed-in, live session of `token` and its active operator, else None.
    Unlike `console_sessions.load_session` it never moves the session's last-seen time: a
    dashboard left open refreshes by itself, which is not the operator using the console,
    so it does not keep an idle session alive."""
    if not token or len(token) > MAX_TOKEN_LEN or not findable(token):
        return None
    row = conn.execute(
        "SELECT id, operator_id FROM console_sessions WHERE token_digest = %s"
        " AND stage = 'full' AND expires_at > now() AND last_seen_at > now() - %s",
        (key_digest(secret_key, token), idle_timeout),
    ).fetchone()
    if row is None:
        return None
    session_id, operator_id = row
    cur = conn.cursor(row_factory=class_row(Operator))
    operator = cur.execute(
        f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = %s AND status = 'active'",
        (operator_id,),
    ).fetchone()
    if operator is None or operator.must_change_password:
        return None
    return Watcher(session_id, operator, visible_pool_ids(conn, operator))
