from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pooler.web.loop_lag import LAG_BUCKETS_S, LoopLagMonitor
from pooler.web.metrics import LOOP_LAG_HISTOGRAM, loop_lag_histogram


def test_quantiles_of_the_window() -> None:
    monitor = LoopLagMonitor()
    assert monitor.quantile(0.99) == 0.0
    monitor.samples.extend(i / 1000 for i in range(100))
    assert monitor.quantile(0.5) == 0.05
    assert monitor.quantile(0.99) == 0.099
    assert monitor.quantile(1.0) == 0.099


async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = LoopLagMonitor()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        await trio.sleep(0.01)
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop on purpose
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert monitor.quantile(1.0) >= 0.1


def test_each_tick_is_counted_once_in_its_bucket() -> None:
    monitor = LoopLagMonitor()
    # 0 and a value equal to a bound land in that bound's bucket (Prometheus `le`); 2 s is
    # above every bound.
    for lag in (0.0, 0.0005, 0.0006, 0.005, 0.0051, 2.0):
        monitor.record(lag)
    assert len(monitor.counts) == len(LAG_BUCKETS_S) + 1
    histogram = monitor.histogram()
    by_bound = dict(histogram.cumulative())
    assert by_bound[0.0005] == 2
    assert by_bound[0.001] == 3
    assert by_bound[0.005] == 4
    assert by_bound[0.0075] == 5
    assert by_bound[1.0] == 5
    assert by_bound[math.inf] == 6
    assert histogram.total_s == sum((0.0005, 0.0006, 0.005, 0.0051, 2.0))
    # The copy does not move with later ticks; the counts never grow in size.
    monitor.record(0.0001)
    assert dict(histogram.cumulative())[math.inf] == 6
    assert len(monitor.counts) == len(LAG_BUCKETS_S) + 1


def test_the_histogram_exposition() -> None:
    monitor = LoopLagMonitor()
    for lag in (0.0002, 0.004, 0.3):
        monitor.record(lag)

    class One:
        def collect(self) -> Iterator[Any]:
            yield loop_lag_histogram(monitor.histogram())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    text = generate_latest(registry).decode()
    assert f"# TYPE {LOOP_LAG_HISTOGRAM} histogram" in text
    (family,) = text_string_to_metric_families(text)
    found = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    bucket = f"{LOOP_LAG_HISTOGRAM}_bucket"
    assert found[(bucket, "0.0005")] == 1
    assert found[(bucket, "0.003")] == 1
    assert found[(bucket, "0.005")] == 2
    assert found[(bucket, "0.25")] == 2
    assert found[(bucket, "0.5")] == 3
    assert found[(bucket, "+Inf")] == 3
    assert found[(f"{LOOP_LAG_HISTOGRAM}_count", None)] == 3
    assert math.isclose(found[(f"{LOOP_LAG_HISTOGRAM}_sum", None)], 0.3042)
    les = [le for name, le in found if name == bucket]
    assert les == [*(f"{b:g}" for b in LAG_BUCKETS_S), "+Inf"]
