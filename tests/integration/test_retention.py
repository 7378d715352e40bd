"""Retention (`pooler.retention`) on the embedded PostgreSQL: exactly the rows past each
cutoff go, in small batches over bounded runs; the hourly and daily stats of pruned hours
stay what their raw rows made them (rolled up first when no rollup had run); the audit
trail keeps its longer retention and records the pruning; 0 days keeps rows for ever; and a
batch in flight blocks no insert."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
import trio

from pooler.db import Database
from pooler.instance_settings import RetentionSettings
from pooler.retention import Retention, cutoffs
from pooler.store import InvalidInputError, logs
from pooler.store.instance_settings import update_instance_settings
from pooler.store.models import AttemptRow, RequestLogRow
from pooler.store.retention import prune_request_logs
from pooler.store.rollups import hour_of, recompute_hours

NOW = datetime(2026, 12, 6, 7, 30, tzinfo=UTC)
POOLS = (UUID(int=1), UUID(int=2))
OLD = datetime(2026, 10, 27, 7, tzinfo=UTC)  # 40 days before NOW: past the 30-day default
CUTOFF_HOUR = hour_of(NOW - timedelta(days=30))


def log_row(name: str, at: datetime, n: int) -> RequestLogRow:
    return RequestLogRow(
        request_id=name,
        created_at=at,
        route="responses",
        outcome="completed" if n % 3 else "failed",
        pool_id=POOLS[n % 2],
        key_prefix="sk-a",
        status_code=200 if n % 3 else 502,
        error_code=None if n % 3 else "upstream_error",
        duration_ms=float(10 + n),
        output_tokens=n,
    )


def seed(database: Database) -> dict[str, list[RequestLogRow]]:
    """Old rows over four hours (two rolled up beforehand, two never), rows inside the
    cutoff's own hour (kept: cutoffs fall on an hour), and recent rows; an attempt each."""
    rows: dict[str, list[RequestLogRow]] = {"old": [], "edge": [], "new": []}
    for h in range(4):
        for n in range(9):
            at = OLD + timedelta(hours=h, minutes=n * 6)
            rows["old"].append(log_row(f"old_{h}_{n}", at, n))
    for n in range(3):
        rows["edge"].append(log_row(f"edge_{n}", CUTOFF_HOUR + timedelta(minutes=n), n))
    for n in range(5):
        rows["new"].append(log_row(f"new_{n}", NOW - timedelta(days=1, minutes=n), n))
    everything = [row for group in rows.values() for row in group]
    attempts = [AttemptRow(r.request_id, 1, r.created_at, r.outcome) for r in everything]

    def write(conn: Any) -> None:
        logs.insert_request_logs(conn, everything)
        logs.insert_attempts(conn, attempts)

    database.run_sync(write)
    # The rollup jobs had run over the first two old hours only.
    first = hour_of(OLD)
    database.run_sync(lambda conn: recompute_hours(conn, first, first + timedelta(hours=1)))
    return rows


def audit_at(database: Database, action: str, at: datetime) -> None:
    database.run_sync(
        lambda conn: conn.execute(
            "INSERT INTO audit_events (created_at, actor, action) VALUES (%s, 'cli', %s)",
            (at, action),
        )
    )


def hourly(database: Database) -> dict[tuple[datetime, Any], tuple[Any, ...]]:
    rows = database.run_sync(
        lambda conn: conn.execute(
            "SELECT hour, pool_id, requests, errors, output_tokens, latency_count,"
            " latency_sum_ms, latency_buckets, latency_counts, error_codes FROM stats_hourly"
        ).fetchall()
    )
    return {(r[0].astimezone(UTC), r[1]): tuple(r[2:]) for r in rows}


def daily(database: Database) -> dict[tuple[datetime, Any], tuple[Any, ...]]:
    rows = database.run_sync(
        lambda conn: conn.execute(
            "SELECT day, pool_id, requests, errors, output_tokens FROM stats_daily"
        ).fetchall()
    )
    return {(r[0].astimezone(UTC), r[1]): tuple(r[2:]) for r in rows}


def request_ids(database: Database, table: str) -> set[str]:
    return {
        r[0]
        for r in database.run_sync(
            lambda conn: conn.execute(f"SELECT request_id FROM {table}").fetchall()
        )
    }


def expected_counts(rows: list[RequestLogRow]) -> Counter[tuple[datetime, Any]]:
    return Counter((hour_of(r.created_at), r.pool_id) for r in rows)


async def test_exactly_the_old_rows_go_and_their_stats_stay(database: Database) -> None:
    rows = seed(database)
    audit_at(database, "ancient", NOW - timedelta(days=400))
    audit_at(database, "last_month", OLD)
    # What every old hour's stats are with all its rows: a full rollup of a copy is what
    # the rollup jobs would have computed; read it, then put the partial state back.
    first, last = hour_of(OLD), hour_of(OLD) + timedelta(hours=3)
    partial = hourly(database)
    database.run_sync(lambda conn: recompute_hours(conn, first, last))
    full_hourly, full_daily = hourly(database), daily(database)
    database.run_sync(
        lambda conn: conn.execute(
            "DELETE FROM stats_hourly WHERE hour >= %s", (first + timedelta(hours=2),)
        )
    )
    assert len(hourly(database)) == len(partial) < len(full_hourly)

    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    retention = Retention(database, batch_rows=7, pause_s=0.25, max_batches=1000, pause=pause)
    pruned = await retention.run_once(NOW)

    kept = {r.request_id for r in rows["edge"] + rows["new"]}
    assert request_ids(database, "request_logs") == kept
    assert request_ids(database, "request_attempts") == kept
    assert (pruned.request_logs, pruned.attempts, pruned.audit_events) == (36, 36, 1)
    assert pruned.unfinished == []
    # Small batches with a pause between each (36 rows in batches of 7: 6 batches).
    assert pauses.count(0.25) >= 5

    # Every old hour keeps the stats of all its rows, the two never rolled up included.
    old_hours = {(h, p) for (h, p) in full_hourly if h <= last}
    after = hourly(database)
    for group in old_hours:
        assert after[group] == full_hourly[group], group
    counts = expected_counts(rows["old"])
    assert {g: after[g][0] for g in old_hours} == dict(counts)
    assert {k: v for k, v in daily(database).items() if k[0] == hour_of(OLD).replace(hour=0)} == {
        k: v for k, v in full_daily.items() if k[0] == hour_of(OLD).replace(hour=0)
    }
    frozen = database.run_sync(
        lambda conn: {r[0] for r in conn.execute("SELECT hour FROM stats_pruned_hours")}
    )
    assert frozen == {first + timedelta(hours=h) for h in range(4)}
    # A later rollup pass over those hours changes nothing.
    database.run_sync(lambda conn: recompute_hours(conn, first, last))
    assert {g: v for g, v in hourly(database).items() if g in old_hours} == {
        g: full_hourly[g] for g in old_hours
    }

    # The audit trail keeps its year: last month's event stays, last year's went; the
    # pruning is itself recorded, with counts only.
    actions = database.run_sync(
        lambda conn: [
            (r[0], r[1], r[2])
            for r in conn.execute("SELECT action, actor, details FROM audit_events ORDER BY action")
        ]
    )
    assert [a for a, _, _ in actions] == ["last_month", "retention.pruned"]
    _, actor, details = actions[1]
    assert actor == "system"
    assert (details["request_logs"], details["attempts"], details["audit_events"]) == (36, 36, 1)
    assert details["before"]["request_logs"] == CUTOFF_HOUR.isoformat()

    # A second run finds nothing and records nothing.
    again = await retention.run_once(NOW)
    assert again.total == 0
    assert (
        len(database.run_sync(lambda conn: conn.execute("SELECT 1 FROM audit_events").fetchall()))
        == 2
    )


async def test_a_run_is_bounded_and_the_next_one_goes_on(database: Database) -> None:
    rows = seed(database)
    retention = Retention(database, batch_rows=5, max_batches=3, pause=_no_pause)
    first = await retention.run_once(NOW)
    assert (first.request_logs, first.attempts) == (15, 15)
    assert set(first.unfinished) == {"attempts", "request_logs"}
    total = first.request_logs
    for _ in range(5):
        total += (await retention.run_once(NOW)).request_logs
    assert total == len(rows["old"])
    kept = {r.request_id for r in rows["edge"] + rows["new"]}
    assert request_ids(database, "request_logs") == kept
    after = hourly(database)
    for group, n in expected_counts(rows["old"]).items():
        assert after[group][0] == n, group


async def test_zero_days_keeps_rows_for_ever_and_attempts_never_outlive_requests(
    database: Database,
) -> None:
    rows = seed(database)
    audit_at(database, "ancient", NOW - timedelta(days=4000))
    forever = {"retention": {"request_logs_days": 0, "attempts_days": 0, "audit_days": 0}}
    database.run_sync(lambda conn: update_instance_settings(conn, forever, actor="cli"))
    retention = Retention(database, pause=_no_pause)
    assert (await retention.run_once(NOW)).total == 0
    assert len(request_ids(database, "request_logs")) == sum(len(v) for v in rows.values())

    # Attempts kept for ever but their requests for 10 days: they go with them.
    shorter = {"retention.request_logs_days": 10}
    database.run_sync(lambda conn: update_instance_settings(conn, shorter, actor="cli"))
    pruned = await retention.run_once(NOW)
    assert pruned.request_logs == pruned.attempts == len(rows["old"]) + len(rows["edge"])
    new = {r.request_id for r in rows["new"]}
    assert request_ids(database, "request_attempts") == request_ids(database, "request_logs") == new


def test_cutoffs_fall_on_an_hour_and_zero_is_never() -> None:
    at = cutoffs(RetentionSettings(30, 60, 0), NOW)
    assert at.request_logs == at.attempts == datetime(2026, 11, 6, 7, tzinfo=UTC)
    assert at.audit_events is None
    assert cutoffs(RetentionSettings(0, 0, 1), NOW).attempts is None
    assert cutoffs(RetentionSettings(0, 7, 1), NOW).attempts == datetime(
        2026, 11, 29, 7, tzinfo=UTC
    )


def test_a_batch_in_flight_blocks_no_insert(database: Database, db_url: str) -> None:
    """A prune batch holds its transaction open (not committed yet): the LogWriter's insert
    of new rows, and of a row in the very hour being pruned, goes through at once (a
    statement timeout bounds the wait: a blocked insert would fail the test, not hang it)."""
    seed(database)
    with psycopg.connect(db_url) as pruner, psycopg.connect(db_url, autocommit=True) as writer:
        batch = prune_request_logs(pruner, CUTOFF_HOUR, 10_000)
        assert batch.deleted == 36  # uncommitted: locks held
        writer.execute("SET statement_timeout = 5000")
        late = [
            log_row("during_new", NOW, 1),
            log_row("during_old", OLD + timedelta(minutes=1), 2),
        ]
        assert logs.insert_request_logs(writer, late) == 2
        assert logs.insert_attempts(writer, [AttemptRow("during_new", 1, NOW, "completed")]) == 1
        pruner.commit()
    assert {"during_new", "during_old"} <= request_ids(database, "request_logs")


async def test_pauses_hold_no_transaction_and_an_insert_then_goes_through(
    database: Database,
) -> None:
    """Between batches the job holds nothing: no session is idle in a transaction, and an
    insert (a new row, and one in the oldest hour kept) finishes within a bounded wait."""
    seed(database)
    idle_in_transaction: list[int] = []
    inserted = 0

    async def pause(seconds: float) -> None:
        nonlocal inserted
        row = await database.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
            ).fetchone()
        )
        idle_in_transaction.append(row[0] if row else -1)
        n = len(idle_in_transaction)
        rows = [
            log_row(f"alongside_{n}", NOW, n),
            log_row(f"edge_{n}_late", CUTOFF_HOUR + timedelta(minutes=30), n),
        ]
        with trio.fail_after(10):
            inserted += await database.run(lambda c: logs.insert_request_logs(c, rows))

    retention = Retention(database, batch_rows=4, pause=pause)
    with trio.fail_after(60):
        pruned = await retention.run_once(NOW)
    assert pruned.request_logs == 36
    assert len(idle_in_transaction) >= 8 and set(idle_in_transaction) == {0}
    assert inserted == 2 * len(idle_in_transaction)


async def _no_pause(seconds: float) -> None:
    await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"retention.request_logs_days": -1}, "retention.request_logs_days must be between 0"),
        ({"retention.audit_days": 3651}, "retention.audit_days must be between 0 and 3650"),
        ({"retention.attempts_days": 1.5}, "retention.attempts_days must be a whole number"),
        ({"retention.attempts_days": True}, "retention.attempts_days must be a number"),
        ({"retention": {"forever": 1}}, "retention.forever is not a retention setting"),
        ({"retention": 30}, "retention must be an object"),
        ({"retention.days": 30}, "retention.days is not an instance setting"),
    ],
)
def test_retention_settings_are_refused_out_of_range(
    database: Database, change: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(named)):
        database.run_sync(lambda c: update_instance_settings(c, change, actor="cli"))
    ok = {"retention.audit_days": 3650, "retention.request_logs_days": 0}
    settings = database.run_sync(lambda c: update_instance_settings(c, ok, actor="cli"))
    assert settings.retention == RetentionSettings(0, 30, 3650)
