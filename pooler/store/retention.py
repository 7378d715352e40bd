"""Retention's statements: one small batch of old history rows deleted per call, each call
meant to be its own short transaction (`pooler.retention` drives them).

A batch is found by the (created_at, ...) / started_at indexes and deleted by ctid, so a
statement touches at most `limit` rows and holds their row locks only until its commit;
inserts (the LogWriter) never wait on it (DELETE and INSERT take compatible table locks).

Request logs cooperate with the hourly rollups (migration 0015): rows go oldest first, and
in the transaction that deletes a batch, the hours it touches are first rolled up from
their complete raw rows (`recompute_hours` skips hours already final). The delete's trigger
then lists those hours in `stats_pruned_hours`, which freezes their rollups: the stats of a
pruned hour are those of all its rows, whatever the rollup jobs had (or had not yet)
computed. Each batch holds the rollup lock (exclusively when it rolls up, shared when its
one hour is already final), so a rollup pass never reads an hour half deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pooler.store.common import Conn
from pooler.store.rollups import ROLLUP_LOCK_KEY, hour_of, recompute_hours

# A batch that waits on a row or table lock gives up instead of queueing others behind it
# (the job tries again next run); a statement that runs long is cut off the same way. The
# rollup lock is awaited up to the statement timeout: a rollup pass holds it for seconds.
LOCK_TIMEOUT_MS: Final = 2000
STATEMENT_TIMEOUT_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class Batch:
    deleted: int  # rows deleted by this batch
    done: bool  # nothing older than the cutoff is left (in this table)


def _bounded(conn: Conn) -> None:
    conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")


def prune_request_logs(conn: Conn, cutoff: datetime, limit: int) -> Batch:
    """Delete the `limit` oldest request logs created before `cutoff` (an hour's start),
    rolling their hours up first unless their rollups are already final."""
    conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    rows = conn.execute(
        "SELECT ctid::text, created_at FROM request_logs WHERE created_at < %s"
        " ORDER BY created_at, id LIMIT %s",
        (cutoff, limit),
    ).fetchall()
    if not rows:
        return Batch(0, True)
    first, last = hour_of(rows[0][1]), hour_of(rows[-1][1])
    frozen = conn.execute(
        "SELECT count(*) FROM stats_pruned_hours WHERE hour >= %s AND hour <= %s", (first, last)
    ).fetchone()
    final = first == last and frozen is not None and frozen[0] == 1
    lock = "pg_advisory_xact_lock_shared" if final else "pg_advisory_xact_lock"
    conn.execute(f"SELECT {lock}(%s)", (ROLLUP_LOCK_KEY,))
    conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    if not final:  # hours already final are skipped
        recompute_hours(conn, first, last)
    cur = conn.execute(
        "DELETE FROM request_logs WHERE ctid = ANY(%s::tid[])", ([ctid for ctid, _ in rows],)
    )
    return Batch(max(cur.rowcount, 0), len(rows) < limit)


def prune_attempts(conn: Conn, cutoff: datetime, limit: int) -> Batch:
    """Delete up to `limit` attempts started before `cutoff`."""
    return _delete(
        conn,
        "DELETE FROM request_attempts WHERE ctid = ANY(ARRAY("
        " SELECT ctid FROM request_attempts WHERE started_at < %s LIMIT %s))",
        cutoff,
        limit,
    )


def prune_audit_events(conn: Conn, cutoff: datetime, limit: int) -> Batch:
    """Delete up to `limit` audit events recorded before `cutoff`, oldest first."""
    return _delete(
        conn,
        "DELETE FROM audit_events WHERE ctid = ANY(ARRAY("
        " SELECT ctid FROM audit_events WHERE created_at < %s ORDER BY created_at, id LIMIT %s))",
        cutoff,
        limit,
    )


def _delete(conn: Conn, statement: str, cutoff: datetime, limit: int) -> Batch:
    _bounded(conn)
    deleted = max(conn.execute(statement, (cutoff, limit)).rowcount, 0)
    return Batch(deleted, deleted < limit)
