"""Hourly rollups of `request_logs` (table `stats_hourly`, migration 0015): computing an
hour from raw rows, and reading a window of hours back for the stats page.

One row per (UTC hour, Pool, account, key prefix) that saw traffic. The model is not a
dimension: the page shows Pools, accounts and keys, and a model per row would multiply the
rows by the number of models for no figure on the page.

Computing is idempotent: an hour's rows are deleted and recomputed from the raw rows in one
transaction, under one advisory lock shared by every node (so two schedulers never
interleave). An hour that lost raw rows (retention) is listed in `stats_pruned_hours` by a
trigger and is never recomputed: its rollup, computed while the rows were there, is final
and outlives them. An error is `request_is_error(status_code, outcome)` (the migration's
one definition). Latency is the request's `duration_ms`, in the fixed histogram of
`pooler.latency_histogram`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final
from uuid import UUID

from pooler import latency_histogram
from pooler.store.common import Conn

HOUR: Final = timedelta(hours=1)
TOP_CODES_PER_ROW: Final = 8  # error codes kept by name per row; the rest are counted
# pg_advisory_xact_lock key for recomputing rollups: "pooler stats" as a bigint.
ROLLUP_LOCK_KEY: Final = 0x706F6F6C73746174

_RECOMPUTE = """
WITH raw AS (
    SELECT date_trunc('hour', created_at, 'UTC') AS hour,
           jsonb_build_array(pool_id, account_id, key_prefix) AS g,
           pool_id, account_id, key_prefix,
           request_is_error(status_code, outcome) AS is_error, error_code,
           input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, duration_ms,
           width_bucket(duration_ms::float8, %(edges)s::float8[]) AS bucket
    FROM request_logs
    WHERE created_at >= %(start)s AND created_at < %(end)s
      AND date_trunc('hour', created_at, 'UTC') NOT IN (
          SELECT hour FROM stats_pruned_hours WHERE hour >= %(start)s AND hour < %(end)s)
), totals AS (
    SELECT hour, g, pool_id, account_id, key_prefix, count(*) AS requests,
           count(*) FILTER (WHERE is_error) AS errors,
           coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens,
           coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
           count(duration_ms) AS latency_count,
           coalesce(sum(duration_ms), 0) AS latency_sum_ms
    FROM raw GROUP BY hour, g, pool_id, account_id, key_prefix
), by_bucket AS (
    SELECT hour, g, bucket, count(*) AS n FROM raw
    WHERE bucket IS NOT NULL GROUP BY hour, g, bucket
), hist AS (
    SELECT hour, g, array_agg(bucket ORDER BY bucket)::smallint[] AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM by_bucket GROUP BY hour, g
), by_code AS (
    SELECT hour, g, error_code, count(*) AS n,
           row_number() OVER (PARTITION BY hour, g ORDER BY count(*) DESC, error_code COLLATE "C")
               AS place
    FROM raw WHERE is_error AND error_code IS NOT NULL GROUP BY hour, g, error_code
), codes AS (
    SELECT hour, g,
           coalesce(jsonb_object_agg(error_code, n) FILTER (WHERE place <= %(top)s), '{}')
               AS error_codes,
           coalesce(sum(n) FILTER (WHERE place > %(top)s), 0) AS error_codes_other
    FROM by_code GROUP BY hour, g
)
INSERT INTO stats_hourly (hour, pool_id, account_id, key_prefix, requests, errors,
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, latency_count,
    latency_sum_ms, latency_buckets, latency_counts, error_codes, error_codes_other)
SELECT t.hour, t.pool_id, t.account_id, t.key_prefix, t.requests, t.errors,
       t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens,
       t.latency_count, t.latency_sum_ms, coalesce(h.buckets, '{}'), coalesce(h.counts, '{}'),
       coalesce(c.error_codes, '{}'), coalesce(c.error_codes_other, 0)
FROM totals t
LEFT JOIN hist h ON h.hour = t.hour AND h.g = t.g
LEFT JOIN codes c ON c.hour = t.hour AND c.g = t.g
"""


def hour_of(moment: datetime) -> datetime:
    """The UTC hour holding `moment` (an aware datetime)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Recomputed:
    hours: int  # hours recomputed (pruned ones excluded)
    rows: int  # rollup rows written
    pruned: tuple[datetime, ...]  # hours left as they were: their raw rows were pruned


def recompute_hours(conn: Conn, first: datetime, last: datetime) -> Recomputed:
    """Recompute the rollups of every hour from `first`'s to `last`'s (inclusive) from the
    raw rows, in this transaction; hours that lost raw rows are left untouched."""
    start, end = hour_of(first), hour_of(last) + HOUR
    if end <= start:
        return Recomputed(0, 0, ())
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
    pruned = tuple(
        row[0].astimezone(UTC)
        for row in conn.execute(
            "SELECT hour FROM stats_pruned_hours WHERE hour >= %s AND hour < %s ORDER BY hour",
            (start, end),
        )
    )
    conn.execute(
        "DELETE FROM stats_hourly WHERE hour >= %(start)s AND hour < %(end)s"
        " AND hour NOT IN (SELECT hour FROM stats_pruned_hours"
        "  WHERE hour >= %(start)s AND hour < %(end)s)",
        {"start": start, "end": end},
    )
    edges = list(latency_histogram.EDGES)
    cur = conn.execute(
        _RECOMPUTE, {"start": start, "end": end, "edges": edges, "top": TOP_CODES_PER_ROW}
    )
    hours = round((end - start) / HOUR) - len(pruned)
    return Recomputed(hours, max(cur.rowcount, 0), pruned)


def recompute_recent(conn: Conn, now: datetime, hours: int) -> Recomputed:
    """The current hour of `now` and the `hours - 1` before it."""
    current = hour_of(now)
    return recompute_hours(conn, current - (hours - 1) * HOUR, current)


# --- reading ---------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    """A group's sums over some rollup rows, and what the page derives from them."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latency_count: int = 0
    latency_sum_ms: Decimal = Decimal(0)
    latency: dict[int, int] = field(default_factory=dict)  # histogram bucket -> count
    error_codes: dict[str, int] = field(default_factory=dict)
    error_codes_other: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cached_share(self) -> float | None:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else None

    @property
    def p50_ms(self) -> float | None:
        return latency_histogram.percentile(self.latency, 50)

    @property
    def p95_ms(self) -> float | None:
        return latency_histogram.percentile(self.latency, 95)

    def top_codes(self, n: int = 5) -> list[tuple[str, int]]:
        return sorted(self.error_codes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


# The groupings the page reads: a fixed SQL expression each (never caller text).
GROUPINGS: Final = {
    "all": "NULL::text",
    "pool": "pool_id",
    "account": "account_id",
    "key": "jsonb_build_array(pool_id, key_prefix)",
    "time": "date_bin(%(step)s, hour, '2000-01-01 00:00:00+00')",
}
_SCOPE = (
    "hour >= %(since)s AND hour < %(until)s AND pool_id IS NOT NULL"
    " AND (%(scope)s::uuid[] IS NULL OR pool_id = ANY(%(scope)s::uuid[]))"
)


def read_figures(
    conn: Conn,
    grouping: str,
    since: datetime,
    until: datetime,
    pool_ids: Iterable[UUID] | None,
    step: timedelta = HOUR,
) -> dict[object, Figures]:
    """The rollups of the hours in [since, until) of the Pools `pool_ids` (None: every
    Pool), summed per group of `grouping` (a key of GROUPINGS)."""
    group = GROUPINGS[grouping]
    params = {
        "since": since,
        "until": until,
        "scope": None if pool_ids is None else list(pool_ids),
        "step": step,
    }
    found: dict[object, Figures] = {}
    for row in conn.execute(
        f"SELECT {group} AS grp, sum(requests), sum(errors), sum(input_tokens),"
        " sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),"
        " sum(latency_count), sum(latency_sum_ms), sum(error_codes_other)"
        f" FROM stats_hourly WHERE {_SCOPE} GROUP BY grp",
        params,
    ):
        requests, errors, input_t, cached, output, reasoning, count = (int(v) for v in row[1:8])
        found[_key(row[0])] = Figures(
            requests,
            errors,
            input_t,
            cached,
            output,
            reasoning,
            count,
            row[8],
            error_codes_other=int(row[9]),
        )
    if not found:
        return found
    for grp, bucket, count in conn.execute(
        f"SELECT {group} AS grp, u.bucket, sum(u.n) FROM stats_hourly,"
        " unnest(latency_buckets, latency_counts) AS u(bucket, n)"
        f" WHERE {_SCOPE} GROUP BY grp, u.bucket",
        params,
    ):
        found[_key(grp)].latency[int(bucket)] = int(count)
    for grp, code, count in conn.execute(
        f"SELECT {group} AS grp, c.key, sum(c.value::bigint) FROM stats_hourly,"
        f" jsonb_each_text(error_codes) AS c WHERE {_SCOPE} GROUP BY grp, c.key",
        params,
    ):
        found[_key(grp)].error_codes[str(code)] = int(count)
    return found


def _key(value: object) -> object:
    """A group's key as Python can hash it (a JSON array arrives as a list)."""
    if isinstance(value, list):
        return tuple(UUID(v) if i == 0 and v else v for i, v in enumerate(value))
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value
