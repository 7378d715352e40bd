"""Hourly rollups (`pooler.store.rollups`, cost included) against a direct aggregation of
the raw rows, for random traffic over a few hours, Pools, accounts and keys, with NULLs,
rows that arrive after a rollup ran, a rebuild, and retention pruning an hour (whose rollup
must survive)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pooler import latency_histogram as lh
from pooler.db import Database
from pooler.store import logs
from pooler.store.models import RequestLogRow
from pooler.store.rollups import TOP_CODES_PER_ROW, read_figures, recompute_hours

BASE = datetime(2026, 11, 30, 10, tzinfo=UTC)
HOURS = 4
POOLS = [UUID(int=1), UUID(int=2), None]
ACCOUNTS = [UUID(int=11), UUID(int=12), None]
KEYS = ["sk-aaaa", "sk-<b>&", None]
CODES = [None, *(f"code_{c}" for c in "abcdefghijk"), "Zed"]
OUTCOMES = ["completed", "failed", "rejected", "stream_failed", "client_disconnected"]
STATUSES = [None, 200, 201, 399, 400, 429, 499, 500, 503]


def is_error(status: int | None, outcome: str) -> bool:
    """The specification of an error (the migration's request_is_error)."""
    return (status is not None and status >= 400) or outcome != "completed"


durations = st.one_of(
    st.none(),
    st.integers(0, 3_000_000_000).map(lambda n: Decimal(n) / 1000),
    st.integers(0, 26).map(lambda j: Decimal(2**j)),  # exactly on a bucket edge
    st.sampled_from([Decimal("0.999"), Decimal(2**24) + 1, Decimal("0")]),
)
tokens = st.one_of(st.none(), st.integers(0, 2_000_000))
# Costs as pooler.pricing computes them: whole pico-dollars (up to $60 a row).
costs = st.one_of(st.none(), st.integers(0, 60 * 10**12).map(lambda n: Decimal(n).scaleb(-12)))


@st.composite
def log_rows(draw: Any) -> tuple[RequestLogRow, bool]:
    at = BASE + timedelta(
        hours=draw(st.integers(0, HOURS - 1)), microseconds=draw(st.integers(0, 3_600_000_000 - 1))
    )
    row = RequestLogRow(
        request_id=f"req_{draw(st.uuids()).hex}",
        created_at=at,
        route="responses",
        outcome=draw(st.sampled_from(OUTCOMES)),
        pool_id=draw(st.sampled_from(POOLS)),
        key_prefix=draw(st.sampled_from(KEYS)),
        status_code=draw(st.sampled_from(STATUSES)),
        error_code=draw(st.sampled_from(CODES)),
        account_id=draw(st.sampled_from(ACCOUNTS)),
        duration_ms=draw(durations),  # Decimal: stored exactly
        input_tokens=draw(tokens),
        cached_input_tokens=draw(tokens),
        output_tokens=draw(tokens),
        reasoning_tokens=draw(tokens),
        cost_usd=draw(costs),
    )
    return row, draw(st.booleans())  # the row arrives late (after a rollup ran)


@dataclass
class Expected:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    durations: list[Decimal] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0

    def add(self, row: RequestLogRow) -> None:
        self.requests += 1
        self.errors += is_error(row.status_code, row.outcome)
        self.input_tokens += row.input_tokens or 0
        self.cached_input_tokens += row.cached_input_tokens or 0
        self.output_tokens += row.output_tokens or 0
        self.reasoning_tokens += row.reasoning_tokens or 0
        self.cost_usd += row.cost_usd or 0
        has_tokens = (row.input_tokens or 0) > 0 or (row.output_tokens or 0) > 0
        self.unpriced_requests += row.cost_usd is None and has_tokens
        if row.duration_ms is not None:
            self.durations.append(Decimal(row.duration_ms))
        if is_error(row.status_code, row.outcome) and row.error_code is not None:
            self.codes[row.error_code] += 1

    def histogram(self) -> dict[int, int]:
        return dict(Counter(lh.bucket_of(float(d)) for d in self.durations))


def direct(rows: list[RequestLogRow]) -> dict[tuple[Any, ...], Expected]:
    groups: dict[tuple[Any, ...], Expected] = defaultdict(Expected)
    for row in rows:
        hour = row.created_at.replace(minute=0, second=0, microsecond=0)
        groups[(hour, row.pool_id, row.account_id, row.key_prefix)].add(row)
    return dict(groups)


def stored(db: Database) -> dict[tuple[Any, ...], dict[str, Any]]:
    def read(conn: Any) -> Any:
        return conn.execute(
            "SELECT hour, pool_id, account_id, key_prefix, requests, errors, input_tokens,"
            " cached_input_tokens, output_tokens, reasoning_tokens, latency_count,"
            " latency_sum_ms, latency_buckets, latency_counts, error_codes, error_codes_other,"
            " cost_usd, unpriced_requests FROM stats_hourly"
        ).fetchall()

    names = [
        "requests",
        "errors",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "latency_count",
        "latency_sum_ms",
        "buckets",
        "counts",
        "codes",
        "other",
        "cost_usd",
        "unpriced_requests",
    ]
    return {
        (r[0].astimezone(UTC), r[1], r[2], r[3]): dict(zip(names, r[4:], strict=True))
        for r in db.run_sync(read)
    }


def nearest_rank(values: list[Decimal], percent: int) -> float:
    ordered = sorted(values)
    return float(ordered[lh.rank_of(percent, len(ordered)) - 1])


def within_bound(estimate: float, true: float) -> bool:
    """The bound pooler.latency_histogram states."""
    slack = 1 + 1e-12
    if true < 1:
        return abs(estimate - true) <= 0.5
    if true >= lh.EDGES[-1]:
        return estimate == lh.EDGES[-1]
    return true / (lh.BOUND * slack) <= estimate <= true * lh.BOUND * slack


def check(db: Database, rows: list[RequestLogRow]) -> None:
    want, got = direct(rows), stored(db)
    assert set(got) == set(want)
    for group, expected in want.items():
        row = got[group]
        for name in [
            "requests",
            "errors",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
            "unpriced_requests",
        ]:
            assert row[name] == getattr(expected, name), (group, name)
        assert row["latency_count"] == len(expected.durations)
        assert row["latency_sum_ms"] == sum(expected.durations, Decimal(0))
        histogram = dict(zip(row["buckets"], row["counts"], strict=True))
        assert histogram == expected.histogram()
        assert row["buckets"] == sorted(row["buckets"])
        for percent in (50, 95):
            estimate = lh.percentile(histogram, percent)
            if expected.durations:
                assert estimate is not None
                assert within_bound(estimate, nearest_rank(expected.durations, percent))
            else:
                assert estimate is None
        ranked = sorted(expected.codes.items(), key=lambda kv: (-kv[1], kv[0]))
        assert row["codes"] == dict(ranked[:TOP_CODES_PER_ROW])
        assert row["other"] == sum(n for _, n in ranked[TOP_CODES_PER_ROW:])


def check_pool_totals(db: Database, rows: list[RequestLogRow]) -> None:
    """The page's read: per Pool over the whole window (rows with no Pool are not shown)."""
    figures = db.run_sync(
        lambda conn: read_figures(conn, "pool", BASE, BASE + timedelta(hours=HOURS), None)
    )
    by_pool: dict[Any, Expected] = defaultdict(Expected)
    for row in rows:
        if row.pool_id is not None:
            by_pool[row.pool_id].add(row)
    assert set(figures) == set(by_pool)
    for pool_id, expected in by_pool.items():
        got = figures[pool_id]
        assert (got.requests, got.errors) == (expected.requests, expected.errors)
        assert got.output_tokens == expected.output_tokens
        assert got.cost_usd == expected.cost_usd
        assert got.unpriced_requests == expected.unpriced_requests
        assert got.latency == expected.histogram()
        assert got.latency_sum_ms == sum(expected.durations, Decimal(0))


def check_reads_over_days(db: Database, rows: list[RequestLogRow]) -> None:
    """A window of several days reads its whole days from the daily rollups and its edge
    hours from the hourly ones: per Pool and per day, the figures are the raw rows'."""
    since, until = BASE - timedelta(days=2, minutes=-30), BASE + timedelta(days=2)

    def read(conn: Any) -> Any:
        return (
            read_figures(conn, "pool", since, until, None),
            read_figures(conn, "time", since, until, None, timedelta(days=1)),
        )

    by_pool_read, by_day_read = db.run_sync(read)
    by_pool: dict[Any, Expected] = defaultdict(Expected)
    by_day: dict[Any, Expected] = defaultdict(Expected)
    for row in rows:
        if row.pool_id is not None:
            by_pool[row.pool_id].add(row)
            by_day[row.created_at.replace(hour=0, minute=0, second=0, microsecond=0)].add(row)
    for read_figures_of, expected_of in ((by_pool_read, by_pool), (by_day_read, by_day)):
        assert set(read_figures_of) == set(expected_of)
        for group, expected in expected_of.items():
            got = read_figures_of[group]
            assert (got.requests, got.errors) == (expected.requests, expected.errors)
            assert got.input_tokens == expected.input_tokens
            assert (got.cost_usd, got.unpriced_requests) == (
                expected.cost_usd,
                expected.unpriced_requests,
            )
            assert got.latency == expected.histogram()
            assert got.latency_sum_ms == sum(expected.durations, Decimal(0))
            ranked = sorted(expected.codes.items(), key=lambda kv: (-kv[1], kv[0]))
            assert sum(got.error_codes.values()) + got.error_codes_other == sum(
                n for _, n in ranked
            )


def rollup_all(db: Database) -> None:
    db.run_sync(lambda conn: recompute_hours(conn, BASE, BASE + timedelta(hours=HOURS - 1)))


def reset(db: Database) -> None:
    def empty(conn: Any) -> None:
        conn.execute("TRUNCATE request_logs, request_attempts, stats_hourly, stats_daily")
        conn.execute("TRUNCATE stats_pruned_hours")  # after: the first notes its hours

    db.run_sync(empty)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(log_rows(), max_size=60))
def test_rollup_equals_direct_aggregation(database: Database, traffic: list[Any]) -> None:
    reset(database)
    on_time = [row for row, late in traffic if not late]
    late = [row for row, late in traffic if late]
    database.run_sync(lambda conn: logs.insert_request_logs(conn, on_time))
    rollup_all(database)
    check(database, on_time)

    database.run_sync(lambda conn: logs.insert_request_logs(conn, late))
    rollup_all(database)  # the scheduler's pass over recent hours catches the late rows
    everything = on_time + late
    check(database, everything)
    check_pool_totals(database, everything)
    check_reads_over_days(database, everything)

    # A rebuild of one hour changes nothing.
    database.run_sync(lambda conn: recompute_hours(conn, BASE + timedelta(hours=1), BASE))
    database.run_sync(
        lambda c: recompute_hours(c, BASE + timedelta(hours=2), BASE + timedelta(hours=2))
    )
    check(database, everything)

    # Retention prunes the first hour and half of the second: both keep their rollups
    # through a rebuild of every hour.
    cutoff = BASE + timedelta(minutes=90)
    database.run_sync(lambda conn: logs.delete_request_logs_before(conn, cutoff))
    result = database.run_sync(
        lambda conn: recompute_hours(conn, BASE, BASE + timedelta(hours=HOURS - 1))
    )
    pruned_hours = {BASE + timedelta(hours=h) for h in range(2)} & {
        row.created_at.replace(minute=0, second=0, microsecond=0)
        for row in everything
        if row.created_at < cutoff
    }
    assert set(result.pruned) == pruned_hours
    check(database, everything)
    check_reads_over_days(database, everything)


def test_an_empty_range_and_a_backwards_range_write_nothing(database: Database) -> None:
    result = database.run_sync(lambda conn: recompute_hours(conn, BASE, BASE))
    assert (result.hours, result.rows, result.pruned) == (1, 0, ())
    backwards = database.run_sync(lambda conn: recompute_hours(conn, BASE, BASE - timedelta(1)))
    assert backwards.hours == 0
    assert math.isclose(lh.BOUND, 2 ** (1 / 8))


def test_the_sql_error_definition_is_the_specification(database: Database) -> None:
    cases = [(s, o) for s in STATUSES for o in [*OUTCOMES, "unknown"]]
    got = database.run_sync(
        lambda conn: [
            conn.execute("SELECT request_is_error(%s, %s)", case).fetchone()[0] for case in cases
        ]
    )
    assert got == [is_error(s, o) for s, o in cases]


def test_an_hour_with_many_error_codes_keeps_the_top_ones_and_counts_the_rest(
    database: Database,
) -> None:
    codes = [f"code_{c}" for c in "abcdefghijkl"]  # 12 codes, code_a most frequent
    rows = [
        RequestLogRow(
            request_id=f"req_{i}_{j}",
            created_at=BASE + timedelta(minutes=i + j),
            route="responses",
            outcome="rejected",
            pool_id=POOLS[0],
            status_code=429,
            error_code=code,
        )
        for i, code in enumerate(codes)
        for j in range(len(codes) - i)
    ]
    database.run_sync(lambda conn: logs.insert_request_logs(conn, rows))
    rollup_all(database)
    check(database, rows)
    (row,) = stored(database).values()
    assert len(row["codes"]) == TOP_CODES_PER_ROW and row["other"] == 4 + 3 + 2 + 1


def test_a_truncate_of_the_raw_logs_leaves_the_rollups_final(database: Database) -> None:
    rows = [
        RequestLogRow(f"req_t{i}", BASE + timedelta(hours=i), "responses", "completed")
        for i in range(2)
    ]
    database.run_sync(lambda conn: logs.insert_request_logs(conn, rows))
    rollup_all(database)
    database.run_sync(lambda conn: conn.execute("TRUNCATE request_logs"))
    result = database.run_sync(
        lambda conn: recompute_hours(conn, BASE, BASE + timedelta(hours=HOURS - 1))
    )
    assert set(result.pruned) == {BASE, BASE + timedelta(hours=1)}
    check(database, rows)
