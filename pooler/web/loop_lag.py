"""Event-loop lag: how late a short sleep wakes up (DESIGN §9).

Kept two ways, both O(1) per tick and of fixed size:

- the last minute of samples, for the `quantile` gauges (`codex_pooler_event_loop_lag_seconds`);
- counts per fixed bucket since start (`counts`, `total_s`), exported as a cumulative
  Prometheus histogram. Counters can be cut to any window (the difference of two scrapes,
  `rate()` in PromQL: a benchmark scenario) and summed across replicas, which quantiles
  over a sliding minute cannot.

A tick is how late past its deadline the sampling task runs, without the timer's own
resolution: the loop waits in `epoll_wait`, whose timeout is whole milliseconds (Python
rounds the wait trio asks for up), so a 50 ms sleep on an idle loop wakes 0-1 ms after
its deadline, ~0.5 ms on average: that was most of the p50 the gateway reported (0.4 ms
under load, issue 17) and up to 1 ms of every tail figure. The tick therefore asks to
wake `EARLY_S` before its deadline and counts only what is past the deadline: an idle
loop reads 0, a loop busy past the deadline reads how long past.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Final

import trio

TICK_S = 0.05
EARLY_S = 0.001  # epoll_wait's resolution: a wait is rounded up to the next millisecond
WINDOW = 1200  # one minute of ticks
# Upper bounds (seconds) of the histogram's buckets, ~0.5 ms to 1 s, and a last bucket
# (+Inf) for the rest. A quantile read from the counts (`histogram_quantile`, the bench's
# gateway_lag.py) is interpolated linearly within the bucket that holds its rank, and a
# tail's ticks sit near their bucket's lower bound, so a wide bucket reads high: with the
# bounds 10 and 20 ms, twenty ticks of 10.2-11 ms above 380 quiet ones read as a p99 of
# 18 ms. From 1 to 50 ms no bucket is more than a third wider than the one below it, so
# the read p99 is within a bucket's width (~25 %) of the ticks' own.
LAG_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.006,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)


@dataclass(frozen=True, slots=True)
class LagHistogram:
    """A copy of the counts: `counts[i]` ticks with lag <= LAG_BUCKETS_S[i] (and above the
    bound before), the last one above every bound; `total_s` the sum of all lags."""

    counts: tuple[int, ...]
    total_s: float

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, ticks at or below it), the last bound +inf: Prometheus' `le`."""
        out = []
        running = 0
        for bound, count in zip((*LAG_BUCKETS_S, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class LoopLagMonitor:
    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=WINDOW)
        self.counts = [0] * (len(LAG_BUCKETS_S) + 1)
        self.total_s = 0.0

    async def run(self) -> None:
        while True:
            deadline = trio.current_time() + TICK_S
            await trio.sleep_until(deadline - EARLY_S)
            self.record(max(0.0, trio.current_time() - deadline))

    def record(self, lag_s: float) -> None:
        self.samples.append(lag_s)
        # bisect_left: a lag equal to a bound counts in that bound's bucket (`le`).
        self.counts[bisect_left(LAG_BUCKETS_S, lag_s)] += 1
        self.total_s += lag_s

    def quantile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def histogram(self) -> LagHistogram:
        return LagHistogram(tuple(self.counts), self.total_s)
