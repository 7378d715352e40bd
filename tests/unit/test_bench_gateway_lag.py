"""The gateway's loop lag over a bench window (ops/bench/gateway_lag.py): the histogram
read from a real /metrics exposition, the difference of two scrapes, the sum over rounds,
quantiles interpolated within a bucket; how the runner and the report carry it (a saved
run without it still renders)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pooler.web.loop_lag import LAG_BUCKETS_S, LoopLagMonitor
from pooler.web.metrics import loop_lag_histogram
from tests.unit.bench_support import load_bench

gateway_lag = load_bench("gateway_lag")
report = load_bench("report")
runner = load_bench("runner")
scenarios = load_bench("scenarios")

INF = math.inf
# The gateway's row of the scenario table up to the loop-lag column.
GATEWAY_ROW = "| sse c=50 | gateway | 3.00 | 5.00 | 1.00 | - | - | 100.00 | - | - | - |"


def exposition(monitor: LoopLagMonitor) -> str:
    """What the gateway's /metrics says about this monitor (the real collector code)."""

    class One:
        def collect(self) -> Iterator[Any]:
            yield loop_lag_histogram(monitor.histogram())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    return generate_latest(registry).decode()


def test_a_window_is_the_difference_of_two_scrapes() -> None:
    monitor = LoopLagMonitor()
    for _ in range(1000):  # before the window: large lags that must not count
        monitor.record(0.3)
    before = gateway_lag.parse_buckets("# other lines\nfoo 1\n" + exposition(monitor))
    for _ in range(98):
        monitor.record(0.0004)
    monitor.record(0.004)
    monitor.record(0.004)
    after = gateway_lag.parse_buckets(exposition(monitor))
    assert before is not None and after is not None
    assert set(after) == {*LAG_BUCKETS_S, INF}
    ticks = gateway_lag.window(before, after)
    assert gateway_lag.ticks(ticks) == 100
    assert ticks[0.0005] == 98 and ticks[0.003] == 98 and ticks[0.005] == 100
    # p50: rank 50 of the 98 in (0, 0.5 ms]; p99: rank 99, the first of the two in (3, 4] ms.
    assert gateway_lag.quantile(ticks, 0.5) == pytest.approx(0.0005 * 50 / 98)
    assert gateway_lag.quantile(ticks, 0.99) == pytest.approx(0.003 + 0.001 * 1 / 2)
    figures = gateway_lag.figures(ticks)
    assert figures["loop_lag_p99_ms"] == pytest.approx(3.5)
    assert figures["loop_lag_ticks"] == 100


def test_quantiles_interpolate_within_the_bucket() -> None:
    buckets = {0.002: 100.0, 0.003: 196.0, 0.005: 200.0, INF: 200.0}
    assert gateway_lag.quantile(buckets, 0.99) == pytest.approx(0.003 + 0.002 * 2 / 4)
    assert gateway_lag.quantile(buckets, 0.5) == pytest.approx(0.002)
    assert gateway_lag.quantile(buckets, 0.25) == pytest.approx(0.001)
    assert gateway_lag.quantile(buckets, 1.0) == pytest.approx(0.005)
    # Above every finite bound: reads as the highest one (a floor, not the value).
    slow = {0.5: 0.0, 1.0: 1.0, INF: 10.0}
    assert gateway_lag.quantile(slow, 0.99) == 1.0
    assert math.isnan(gateway_lag.quantile({0.5: 0.0, INF: 0.0}, 0.99))
    assert math.isnan(gateway_lag.quantile(None, 0.99))
    assert math.isnan(gateway_lag.figures(None)["loop_lag_ticks"])
    with pytest.raises(ValueError):
        gateway_lag.quantile(buckets, 99)


def test_unreadable_or_reset_windows_are_not_measured() -> None:
    a = {0.001: 5.0, INF: 6.0}
    assert gateway_lag.window(None, a) is None
    assert gateway_lag.window(a, None) is None
    assert gateway_lag.window(a, {0.002: 5.0, INF: 6.0}) is None  # other buckets
    assert gateway_lag.window(a, {0.001: 1.0, INF: 2.0}) is None  # the gateway restarted
    assert gateway_lag.parse_buckets("codex_pooler_requests_total 1.0\n") is None
    assert gateway_lag.add(None, a) == a
    assert gateway_lag.add(a, a) == {0.001: 10.0, INF: 12.0}
    with pytest.raises(ValueError):
        gateway_lag.add(a, {0.002: 1.0, INF: 1.0})


def test_the_runner_sums_windows_over_rounds_per_mode() -> None:
    run = runner.Run(None, scenarios.QUICK, report.Results(meta={}), None, {}, {})
    sse50 = scenarios.Scenario("sse", 50)
    key = (sse50.key, "latency")
    run.add_lag(key, {0.005: 0.0, INF: 0.0}, {0.005: 99.0, INF: 99.0})
    run.add_lag(key, {0.005: 99.0, INF: 99.0}, {0.005: 100.0, INF: 101.0})
    run.add_lag((sse50.key, "saturated"), {0.005: 0.0, INF: 0.0}, {0.005: 10.0, INF: 10.0})
    assert run.lag[key] == {0.005: 100.0, INF: 101.0}
    figures = runner.lag_figures(run, sse50)
    assert figures["loop_lag_ticks"] == 101
    assert figures["loop_lag_p99_ms"] == pytest.approx(5.0 * 99.99 / 100)
    assert figures["saturated_loop_lag_ticks"] == 10
    # One unread window spoils the sum for good (a partial sum would look measured).
    run.add_lag(key, None, {0.005: 1.0, INF: 1.0})
    run.add_lag(key, {0.005: 0.0, INF: 0.0}, {0.005: 1.0, INF: 1.0})
    assert run.lag[key] is None
    assert math.isnan(runner.lag_figures(run, sse50)["loop_lag_p99_ms"])
    c1 = scenarios.Scenario("sse", 1)
    assert "saturated_loop_lag_p99_ms" not in runner.lag_figures(run, c1)


def _results(gateway_extra: dict[str, float]) -> Any:
    side = {"p50_ms": 3.0, "p99_ms": 5.0, "ttfb_p50_ms": 1.0, "rps": 100.0, "errors": 0}
    results = report.Results(meta={"date": "d", "machine": "m"})
    results.scenarios["sse c=50"] = {
        "direct": dict(side),
        "floor": dict(side),
        "gateway": {**side, **gateway_extra},
    }
    results.errors = {"gateway": Counter()}
    return results


def test_the_report_with_and_without_the_gateway_loop_lag() -> None:
    measured = report.to_json(
        _results(
            {
                "loop_lag_p50_ms": 0.4,
                "loop_lag_p99_ms": 6.25,
                "loop_lag_ticks": 400.0,
                "saturated_loop_lag_p99_ms": 20.0,
            }
        )
    )
    (entry,) = measured["scenarios"]
    assert entry["gateway"]["loop_lag_p99_ms"] == 6.25
    budget = next(b for b in measured["budgets"] if b["metric"] == "loop_lag_p99_ms")
    assert (budget["scenario"], budget["limit"], budget["status"]) == ("sse c=50", 5.0, "NOT met")
    text = report.markdown(measured)
    assert "loop lag p99 |" in text
    assert f"{GATEWAY_ROW} 6.25 | 0 |" in text
    assert "- sse c=50: p50 0.40 ms, p99 6.25 ms over 400 ticks, saturated p99 20.00 ms" in text
    assert "interpolated" in text

    # A run saved before the figure existed: no paragraph, a dash, "not measured".
    old = report.to_json(_results({}))
    text = report.markdown(old)
    assert "Gateway event-loop lag" not in text
    assert f"{GATEWAY_ROW} - | 0 |" in text
    budget = next(b for b in old["budgets"] if b["metric"] == "loop_lag_p99_ms")
    assert budget["status"] == "not measured"
    # ... and one saved before the budget existed at all still renders.
    old["budgets"] = [b for b in old["budgets"] if b["metric"] != "loop_lag_p99_ms"]
    for scenario in old["scenarios"]:
        for path in ("direct", "floor", "gateway"):
            scenario[path].pop("loop_lag_p99_ms", None)
    assert "No errors" in report.markdown(old)
