"""The gateway's own event-loop lag over one measured window, from its /metrics.

The gateway counts how late each 50 ms sleep wakes up in a cumulative histogram
(`codex_pooler_event_loop_tick_lag_seconds`, pooler/web/loop_lag.py). The bench scrapes it
once just before a gateway run and once just after (never during: a scrape is work on the
gateway's loop too), and the difference of the two is that window's ticks.
Windows of one scenario and mode are summed over the rounds (counters add up) and a
quantile is read from the sum as Prometheus' `histogram_quantile` does: linearly
interpolated within the bucket that holds the rank, so it is exact only to the bucket
(bounds 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 10, 12.5, 15, 20 ms ...: a bucket at most a
third wider than the one below it, so the figure is within ~25 % of the ticks' own; a
baseline gateway from before 2026-12-06 has 10-20 and 20-50 ms buckets, whose p99 read
high); a rank in the last bucket (above 1 s)
reads as the highest finite bound.

`/metrics` is open on the bench's fresh instance (no metrics token is created); a scrape
that fails or finds no histogram (an older gateway) leaves the figure "not measured".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import h11
import trio

HISTOGRAM = "codex_pooler_event_loop_tick_lag_seconds"
SCRAPE_TIMEOUT_S = 5.0
_BUCKET = re.compile(rf'^{HISTOGRAM}_bucket\{{le="([^"]+)"\}} (\S+)$', re.MULTILINE)

# Upper bound (seconds; the last is inf) -> ticks at or below it, cumulative.
Buckets = dict[float, float]


def parse_buckets(text: str) -> Buckets | None:
    """The histogram's buckets from a /metrics text; None when it has none."""
    found = {float(le): float(count) for le, count in _BUCKET.findall(text)}
    return found if math.inf in found else None


def window(before: Buckets | None, after: Buckets | None) -> Buckets | None:
    """The ticks between two scrapes; None when either is missing, the buckets differ, or
    a count went down (the gateway restarted in between)."""
    if before is None or after is None or before.keys() != after.keys():
        return None
    diff = {bound: after[bound] - before[bound] for bound in sorted(after)}
    return None if any(count < 0 for count in diff.values()) else diff


def add(total: Buckets | None, more: Buckets) -> Buckets:
    """`total` + `more` bucket by bucket (both from the same gateway's layout)."""
    if total is None:
        return dict(more)
    if total.keys() != more.keys():
        raise ValueError("cannot add histograms with different buckets")
    return {bound: total[bound] + more[bound] for bound in total}


def ticks(buckets: Mapping[float, float] | None) -> int:
    return int(buckets.get(math.inf, 0.0)) if buckets else 0


def quantile(buckets: Mapping[float, float] | None, q: float) -> float:
    """The q-quantile (0..1) in seconds, interpolated within its bucket; NaN without ticks."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, not {q}")
    total = ticks(buckets)
    if not buckets or total <= 0:
        return math.nan
    rank = q * total
    lower_bound = lower_count = 0.0
    for bound in sorted(buckets):
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above every finite bound: reads as the highest one
            if count == lower_count:
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound  # unreachable: the +Inf bucket holds every tick


def figures(buckets: Buckets | None, prefix: str = "") -> dict[str, float]:
    """`loop_lag_p50_ms`, `loop_lag_p99_ms` and `loop_lag_ticks` (under `prefix`)."""
    return {
        f"{prefix}loop_lag_p50_ms": quantile(buckets, 0.5) * 1000.0,
        f"{prefix}loop_lag_p99_ms": quantile(buckets, 0.99) * 1000.0,
        f"{prefix}loop_lag_ticks": float(ticks(buckets)) if buckets else math.nan,
    }


async def scrape(port: int, host: str = "127.0.0.1") -> Buckets | None:
    """One `GET /metrics` on a connection of its own; None when it does not answer 200."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target="/metrics",
        headers=[("host", f"{host}:{port}"), ("connection", "close")],
    )
    body = bytearray()
    status = 0
    try:
        with trio.fail_after(SCRAPE_TIMEOUT_S):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    (conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b"")
                )
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif type(event) is h11.Response:
                        status = event.status_code
                    elif type(event) is h11.Data:
                        body += event.data
                    elif type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
                        break
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError):
        return None
    if status != 200:
        return None
    return parse_buckets(body.decode("utf-8", "replace"))
