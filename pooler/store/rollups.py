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
`pooler.latency_histogram`. Cost is the exact sum of the rows' `cost_usd` (priced when each
row was recorded), beside the count of rows with tokens but no price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from pooler import latency_histogram
from pooler.store.common import Conn

HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
TOP_CODES_PER_ROW: Final = 8  # error codes kept by name per row; the rest are counted
# pg_advisory_xact_lock key for recomputing rollups: "pooler stats" as a bigint.
ROLLUP_LOCK_KEY: Final = 0x706F6F6C73746174

# One scan of the hour's raw rows, grouped once: each group's latency buckets and error
# codes gathered as arrays and counted per group afterwards. (Grouping the rows three times
# over a CTE, keyed by a JSON array built per row, cost twice the server's CPU: ~470 against
# ~250 ms at 150,000 rows, every minute, on the core the database may share with the
# gateway.)
_RECOMPUTE = """
WITH totals AS (
    SELECT date_trunc('hour', created_at, 'UTC') AS hour, pool_id, account_id, key_prefix,
           count(*) AS requests,
           count(*) FILTER (WHERE request_is_error(status_code, outcome)) AS errors,
           coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens,
           coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
           count(duration_ms) AS latency_count,
           coalesce(sum(duration_ms), 0) AS latency_sum_ms,
           coalesce(sum(cost_usd), 0) AS cost_usd,
           count(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens > 0 OR output_tokens > 0))
               AS unpriced_requests,
           array_agg(width_bucket(duration_ms::float8, %(edges)s::float8[]))
               FILTER (WHERE duration_ms IS NOT NULL) AS buckets,
           array_agg(error_code)
               FILTER (WHERE error_code IS NOT NULL AND request_is_error(status_code, outcome))
               AS codes
    FROM request_logs
    WHERE created_at >= %(start)s AND created_at < %(end)s
      AND date_trunc('hour', created_at, 'UTC') NOT IN (
          SELECT hour FROM stats_pruned_hours WHERE hour >= %(start)s AND hour < %(end)s)
    GROUP BY 1, pool_id, account_id, key_prefix
)
INSERT INTO stats_hourly (hour, pool_id, account_id, key_prefix, requests, errors,
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, latency_count,
    latency_sum_ms, latency_buckets, latency_counts, error_codes, error_codes_other,
    cost_usd, unpriced_requests)
SELECT t.hour, t.pool_id, t.account_id, t.key_prefix, t.requests, t.errors,
       t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens,
       t.latency_count, t.latency_sum_ms, coalesce(h.buckets, '{}'), coalesce(h.counts, '{}'),
       coalesce(c.error_codes, '{}'), coalesce(c.error_codes_other, 0),
       t.cost_usd, t.unpriced_requests
FROM totals t
CROSS JOIN LATERAL (
    SELECT array_agg(bucket ORDER BY bucket)::smallint[] AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM (SELECT bucket, count(*) AS n FROM unnest(t.buckets) AS bucket GROUP BY bucket) b
) h
CROSS JOIN LATERAL (
    SELECT jsonb_object_agg(code, n) FILTER (WHERE place <= %(top)s) AS error_codes,
           sum(n) FILTER (WHERE place > %(top)s) AS error_codes_other
    FROM (
        SELECT code, count(*) AS n,
               row_number() OVER (ORDER BY count(*) DESC, code COLLATE "C") AS place
        FROM unnest(t.codes) AS code GROUP BY code
    ) p
) c
"""


# A day's rollups from its hours' (stats_hourly -> stats_daily), for the days in
# [%(start)s, %(end)s): sums, histograms merged bucket by bucket, error codes united.
_RECOMPUTE_DAYS = """
WITH hourly AS (
    SELECT date_trunc('day', hour, 'UTC') AS day,
           jsonb_build_array(pool_id, account_id, key_prefix) AS g, h.*
    FROM stats_hourly h WHERE hour >= %(start)s AND hour < %(end)s
), totals AS (
    SELECT day, g, pool_id, account_id, key_prefix, sum(requests) AS requests,
           sum(errors) AS errors, sum(input_tokens) AS input_tokens,
           sum(cached_input_tokens) AS cached_input_tokens,
           sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens,
           sum(latency_count) AS latency_count, sum(latency_sum_ms) AS latency_sum_ms,
           sum(error_codes_other) AS error_codes_other, sum(cost_usd) AS cost_usd,
           sum(unpriced_requests) AS unpriced_requests
    FROM hourly GROUP BY day, g, pool_id, account_id, key_prefix
), by_bucket AS (
    SELECT day, g, u.bucket, sum(u.n)::bigint AS n
    FROM hourly, unnest(latency_buckets, latency_counts) AS u(bucket, n)
    GROUP BY day, g, u.bucket
), hist AS (
    SELECT day, g, array_agg(bucket ORDER BY bucket)::smallint[] AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM by_bucket GROUP BY day, g
), by_code AS (
    SELECT day, g, c.key AS code, sum(c.value::bigint) AS n
    FROM hourly, jsonb_each_text(error_codes) AS c GROUP BY day, g, c.key
), codes AS (
    SELECT day, g, jsonb_object_agg(code, n) AS error_codes FROM by_code GROUP BY day, g
)
INSERT INTO stats_daily (day, pool_id, account_id, key_prefix, requests, errors,
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, latency_count,
    latency_sum_ms, latency_buckets, latency_counts, error_codes, error_codes_other,
    cost_usd, unpriced_requests)
SELECT t.day, t.pool_id, t.account_id, t.key_prefix, t.requests, t.errors,
       t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens,
       t.latency_count, t.latency_sum_ms, coalesce(h.buckets, '{}'), coalesce(h.counts, '{}'),
       coalesce(c.error_codes, '{}'), t.error_codes_other, t.cost_usd, t.unpriced_requests
FROM totals t
LEFT JOIN hist h ON h.day = t.day AND h.g = t.g
LEFT JOIN codes c ON c.day = t.day AND c.g = t.g
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
    written = max(cur.rowcount, 0)
    _recompute_days(conn, day_of(start), day_of(end - HOUR) + DAY)
    return Recomputed(hours, written, pruned)


def day_of(moment: datetime) -> datetime:
    """The UTC day holding `moment` (an aware datetime), as its first instant."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _recompute_days(conn: Conn, start: datetime, end: datetime) -> None:
    """The daily rollups of the days in [start, end), from their hours' (call it holding the
    rollup lock, after the hours are recomputed)."""
    conn.execute("DELETE FROM stats_daily WHERE day >= %s AND day < %s", (start, end))
    conn.execute(_RECOMPUTE_DAYS, {"start": start, "end": end})


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
    # API-equivalent cost in US dollars (pooler.pricing), and the requests with tokens but
    # no price (a model the catalog does not list), which it leaves out.
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0

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


# The groupings the page reads: the columns of each grouping set (never caller text),
# and the GROUPING(pool_id, account_id, key_prefix, t) bitmask that marks its result rows
# (a bit is set for each column the set leaves out).
GROUPINGS: Final = {
    "all": ("", 0b1111),
    "pool": ("pool_id", 0b0111),
    "account": ("account_id", 0b1011),
    "key": ("pool_id, key_prefix", 0b0101),
    "time": ("t", 0b1110),
}
_COLUMNS: Final = (
    "pool_id, account_id, key_prefix, requests, errors, input_tokens, cached_input_tokens,"
    " output_tokens, reasoning_tokens, latency_count, latency_sum_ms, latency_buckets,"
    " latency_counts, error_codes, error_codes_other, cost_usd, unpriced_requests"
)
# The window's rows of the Pools in scope: the whole UTC days in it from stats_daily, the
# hours at its edges from stats_hourly ([day_from, day_to) is empty when the window holds
# no whole day, or when the chart's buckets are finer than a day); `t` is the chart bucket.
_ROWS: Final = (
    "(SELECT *, date_bin(%(step)s, at, '2000-01-01 00:00:00+00') AS t FROM ("
    f"SELECT hour AS at, {_COLUMNS} FROM stats_hourly"
    " WHERE hour >= %(since)s AND hour < %(until)s"
    " AND (hour < %(day_from)s OR hour >= %(day_to)s)"
    f" UNION ALL SELECT day AS at, {_COLUMNS} FROM stats_daily"
    " WHERE day >= %(day_from)s AND day < %(day_to)s) AS both_tables"
    " WHERE pool_id IS NOT NULL"
    " AND (%(scope)s::uuid[] IS NULL OR pool_id = ANY(%(scope)s::uuid[]))) AS rows"
)
_WHICH: Final = "GROUPING(pool_id, account_id, key_prefix, t)"


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
    return read_groupings(conn, (grouping,), since, until, pool_ids, step)[grouping]


def read_groupings(
    conn: Conn,
    groupings: Iterable[str],
    since: datetime,
    until: datetime,
    pool_ids: Iterable[UUID] | None,
    step: timedelta = HOUR,
) -> dict[str, dict[object, Figures]]:
    """`read_figures` for several groupings at once: three statements in all, each reading
    the window's rows once (GROUPING SETS), whatever the number of groupings."""
    # Every set is always grouped (GROUPING() needs each of its columns in some set); the
    # caller gets the groupings it asked for.
    wanted = {GROUPINGS[name][1]: name for name in GROUPINGS}
    sets = ", ".join(f"({columns}{{extra}})" for columns, _ in GROUPINGS.values())
    asked = set(groupings)
    day_from, day_to = whole_days(since, until)
    if step % DAY:  # chart buckets finer than a day need the hours
        day_from = day_to = since
    params = {
        "since": since,
        "until": until,
        "day_from": day_from,
        "day_to": day_to,
        "scope": None if pool_ids is None else list(pool_ids),
        "step": step,
    }
    found: dict[str, dict[object, Figures]] = {name: {} for name in wanted.values()}

    def group_of(row: Any) -> tuple[dict[object, Figures], object]:
        name = wanted[row[0]]
        return found[name], _key(name, row[1:5])

    for row in conn.execute(
        f"SELECT {_WHICH}, pool_id, account_id, key_prefix, t, sum(requests), sum(errors),"
        " sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),"
        " sum(reasoning_tokens), sum(latency_count), sum(latency_sum_ms),"
        f" sum(error_codes_other), sum(cost_usd), sum(unpriced_requests) FROM {_ROWS}"
        f" GROUP BY GROUPING SETS ({_sets(sets, '')})",
        params,
    ):
        if row[5] is None:  # the empty set's one row over no rows at all
            continue
        figures, key = group_of(row)
        requests, errors, input_t, cached, output, reasoning, count = (int(v) for v in row[5:12])
        figures[key] = Figures(
            requests,
            errors,
            input_t,
            cached,
            output,
            reasoning,
            count,
            row[12],
            error_codes_other=int(row[13]),
            cost_usd=row[14],
            unpriced_requests=int(row[15]),
        )
    if not any(found.values()):
        return found
    for row in conn.execute(
        f"SELECT {_WHICH}, pool_id, account_id, key_prefix, t, u.bucket, sum(u.n)"
        f" FROM {_ROWS}, unnest(latency_buckets, latency_counts) AS u(bucket, n)"
        f" GROUP BY GROUPING SETS ({_sets(sets, ', u.bucket')})",
        params,
    ):
        figures, key = group_of(row)
        figures[key].latency[int(row[5])] = int(row[6])
    for row in conn.execute(
        f"SELECT {_WHICH}, pool_id, account_id, key_prefix, t, c.key, sum(c.value::bigint)"
        f" FROM {_ROWS}, jsonb_each_text(error_codes) AS c"
        f" GROUP BY GROUPING SETS ({_sets(sets, ', c.key')})",
        params,
    ):
        figures, key = group_of(row)
        figures[key].error_codes[str(row[5])] = int(row[6])
    return {name: figures for name, figures in found.items() if name in asked}


def _sets(template: str, extra: str) -> str:
    """The grouping sets, each with `extra` (the unnested column) added; `(, x)` for the
    empty set becomes `(x)`."""
    return template.replace("{extra}", extra).replace("(, ", "(")


def whole_days(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The UTC days wholly inside [since, until), as [first, end) (empty: first == end)."""
    first = day_of(since)
    if first < since:
        first += DAY
    end = max(first, day_of(until))
    return first, end


def _key(grouping: str, columns: Any) -> object:
    """A group's key: None (all), the Pool or account id, (Pool id, key prefix), or the
    chart bucket's start (UTC)."""
    pool_id, account_id, key_prefix, bucket = columns
    if grouping == "pool":
        return pool_id
    if grouping == "account":
        return account_id
    if grouping == "key":
        return (pool_id, key_prefix)
    if grouping == "time":
        return bucket.astimezone(UTC)
    return None
