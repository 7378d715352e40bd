"""The benchmark's pure statistics (ops/bench/stats.py): percentiles, the log histogram,
medians of round medians and the budget verdicts."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st


def _load_stats() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "ops" / "bench" / "stats.py"
    spec = importlib.util.spec_from_file_location("ops_bench_stats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


stats = _load_stats()

_values = st.lists(
    st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=1, max_size=300
)


def test_percentile_interpolates_between_ranks() -> None:
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert stats.percentile([10.0], 99) == 10.0
    assert stats.percentile(list(range(101)), 99) == 99.0


def test_percentile_of_nothing_is_nan_and_bad_q_raises() -> None:
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


@given(_values, st.floats(min_value=0, max_value=100))
def test_percentile_stays_within_the_data(values: list[float], q: float) -> None:
    p = stats.percentile(values, q)
    assert min(values) <= p <= max(values)


@given(_values)
def test_percentiles_are_monotonic(values: list[float]) -> None:
    ps = [stats.percentile(values, q) for q in (0, 10, 50, 90, 99, 100)]
    assert ps == sorted(ps)


def test_summarize() -> None:
    summary = stats.summarize([3.0, 1.0, 2.0])
    assert (summary.count, summary.mean, summary.p50, summary.max) == (3, 2.0, 2.0, 3.0)
    empty = stats.summarize([])
    assert empty.count == 0 and math.isnan(empty.p99)


def test_median_skips_nan() -> None:
    assert stats.median([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(stats.median([math.nan]))


@given(_values, st.sampled_from([1.0, 50.0, 90.0, 99.0, 100.0]))
def test_histogram_percentile_is_close_to_a_recorded_value(values: list[float], q: float) -> None:
    histogram = stats.Histogram(precision=0.01, floor=1e-6)
    histogram.record_many(values)
    ordered = sorted(values)
    rank = max(1, math.ceil(len(values) * q / 100))
    exact = ordered[rank - 1]  # nearest rank
    got = histogram.percentile(q)
    if exact < 1e-6:
        assert got == 0.0
    else:
        assert got == pytest.approx(exact, rel=0.01)
    assert histogram.count == len(values)
    assert histogram.max == max(values)


def test_histogram_matches_exact_percentiles_on_a_large_sample() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-7, 1.5) for _ in range(50_000)]  # seconds, like SSE gaps
    histogram = stats.Histogram()
    histogram.record_many(values)
    for q in (50, 90, 99, 99.9):
        assert histogram.percentile(q) == pytest.approx(stats.percentile(values, q), rel=0.02)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


def test_histogram_merge_equals_recording_everything() -> None:
    a, b, both = stats.Histogram(), stats.Histogram(), stats.Histogram()
    a.record_many([0.001, 0.002, 0.5])
    b.record_many([0.0, 0.003])
    both.record_many([0.001, 0.002, 0.5, 0.0, 0.003])
    a.merge(b)
    assert [a.percentile(q) for q in (0, 25, 50, 75, 100)] == [
        both.percentile(q) for q in (0, 25, 50, 75, 100)
    ]
    assert (a.count, a.max) == (5, 0.5)
    with pytest.raises(ValueError):
        a.merge(stats.Histogram(precision=0.05))


def test_histogram_edges() -> None:
    histogram = stats.Histogram()
    assert math.isnan(histogram.percentile(50)) and math.isnan(histogram.mean)
    histogram.record(0.0)
    assert histogram.percentile(99) == 0.0
    with pytest.raises(ValueError):
        histogram.record(-1.0)
    with pytest.raises(ValueError):
        histogram.record(math.nan)
    with pytest.raises(ValueError):
        stats.Histogram(precision=0.0)


def test_median_of_medians_per_key() -> None:
    rounds = [
        {"p50_ms": 1.0, "rps": 100.0},
        {"p50_ms": 3.0, "rps": math.nan},
        {"p50_ms": 2.0, "rps": 300.0, "cpu": 5.0},
    ]
    assert stats.median_of_medians(rounds) == {"p50_ms": 2.0, "rps": 200.0, "cpu": 5.0}
    assert stats.median_of_medians([]) == {}


def test_added_is_path_minus_direct() -> None:
    assert stats.added({"p50_ms": 3.5}, {"p50_ms": 1.0}, "p50_ms") == 2.5
    assert math.isnan(stats.added({}, {"p50_ms": 1.0}, "p50_ms"))


def test_evaluate_budgets() -> None:
    scenarios = {
        "short c=1": {
            "direct": {"p50_ms": 1.0},
            "floor": {"p50_ms": 1.2},
            "gateway": {"p50_ms": 1.5, "rps_per_core": 900.0},
        }
    }
    ceiling = stats.Budget("added p50", "short c=1", "p50_ms", 0.6, "ms")
    floor_budget = stats.Budget(
        "rps", "short c=1", "rps_per_core", 1000.0, "req/s", added=False, at_least=True
    )
    missing = stats.Budget("gap", "sse c=1", "gap_p99_ms", 1.0, "ms")
    tight = stats.Budget("added p50", "short c=1", "p50_ms", 0.4, "ms")
    verdicts = stats.evaluate([ceiling, floor_budget, missing, tight], scenarios)
    assert verdicts[0].value == pytest.approx(0.5)
    assert verdicts[0].floor_value == pytest.approx(0.2)
    assert [v.status for v in verdicts] == ["met", "NOT met", "not measured", "NOT met"]
