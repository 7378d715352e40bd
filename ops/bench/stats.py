"""Pure statistics for the benchmark: percentiles, a log-bucketed histogram, medians of
round medians, added latency and the DESIGN §9 budget verdicts. No I/O, no clock.

Exact percentiles use linear interpolation between closest ranks (numpy's default), so
`percentile([1, 2, 3, 4], 50) == 2.5`. The histogram trades exactness for constant memory
(SSE gaps come by the hundred thousand): a value lands in the bucket
`floor(log(v / floor) / log(1 + precision))`, so any percentile it reports is within
`precision` (relative) of a value actually recorded near that rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Budget",
    "Histogram",
    "Summary",
    "Verdict",
    "added",
    "evaluate",
    "median",
    "median_of_medians",
    "percentile",
    "summarize",
]


def percentile(values: Sequence[float], q: float, *, is_sorted: bool = False) -> float:
    """The q-th percentile (0..100) of `values`, linearly interpolated; NaN when empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    if not values:
        return math.nan
    ordered = values if is_sorted else sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there is none."""
    finite = [v for v in values if not math.isnan(v)]
    return percentile(finite, 50.0)


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    ordered = sorted(values)
    return Summary(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50.0, is_sorted=True),
        p90=percentile(ordered, 90.0, is_sorted=True),
        p99=percentile(ordered, 99.0, is_sorted=True),
        max=ordered[-1],
    )


class Histogram:
    """Log-bucketed counts of non-negative values; mergeable; constant memory.

    Values below `floor` (zero included) share bucket 0 and report as 0.0. A bucket
    reports its geometric midpoint, so the relative error is at most about precision/2.
    """

    __slots__ = ("_buckets", "_count", "_floor", "_log_base", "_max", "_sum", "precision")

    def __init__(self, precision: float = 0.01, floor: float = 1e-6) -> None:
        if not 0.0 < precision < 1.0 or floor <= 0.0:
            raise ValueError("precision must be within (0, 1) and floor positive")
        self.precision = precision
        self._floor = floor
        self._log_base = math.log1p(precision)
        self._buckets: dict[int, int] = {}
        self._count = 0
        self._sum = 0.0
        self._max = 0.0

    @property
    def count(self) -> int:
        return self._count

    @property
    def max(self) -> float:
        return self._max

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else math.nan

    def _index(self, value: float) -> int:
        if value < self._floor:
            return 0
        return 1 + int(math.log(value / self._floor) / self._log_base)

    def _value(self, index: int) -> float:
        if index == 0:
            return 0.0
        return self._floor * math.exp((index - 0.5) * self._log_base)

    def record(self, value: float) -> None:
        if value < 0.0 or math.isnan(value):
            raise ValueError(f"cannot record {value!r}")
        index = self._index(value)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self._count += 1
        self._sum += value
        if value > self._max:
            self._max = value

    def record_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        if (other.precision, other._floor) != (self.precision, self._floor):
            raise ValueError("cannot merge histograms with different buckets")
        for index, count in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + count
        self._count += other._count
        self._sum += other._sum
        self._max = max(self._max, other._max)

    def percentile(self, q: float) -> float:
        """The value at rank ceil(q% of count) (nearest rank); NaN when empty."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be within 0..100, not {q}")
        if not self._count:
            return math.nan
        rank = max(1, math.ceil(self._count * q / 100.0))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self._value(index), self._max)
        return self._max  # unreachable: the counts add up to self._count


def median_of_medians(rounds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the median over the rounds that have it (NaN values are skipped)."""
    keys: list[str] = []
    for figures in rounds:
        keys.extend(k for k in figures if k not in keys)
    return {key: median(r[key] for r in rounds if key in r) for key in keys}


def added(path: Mapping[str, float], direct: Mapping[str, float], key: str) -> float:
    """`path[key] - direct[key]`: what a hop adds; NaN when either side lacks it."""
    a, b = path.get(key, math.nan), direct.get(key, math.nan)
    return a - b


@dataclass(frozen=True, slots=True)
class Budget:
    """One DESIGN §9 budget: `metric` of `side` in `scenario` compared with `limit`.

    `added=True` compares `side - direct`; `at_least=True` means a floor, not a ceiling.
    """

    label: str
    scenario: str
    metric: str
    limit: float
    unit: str
    added: bool = True
    at_least: bool = False
    side: str = "gateway"


@dataclass(frozen=True, slots=True)
class Verdict:
    budget: Budget
    value: float
    floor_value: float  # the same figure for the floor relay (the Python-hop limit)

    @property
    def status(self) -> str:
        if math.isnan(self.value):
            return "not measured"
        ok = (
            self.value >= self.budget.limit
            if self.budget.at_least
            else (self.value <= self.budget.limit)
        )
        return "met" if ok else "NOT met"


def _figure(sides: Mapping[str, Mapping[str, float]], side: str, budget: Budget) -> float:
    values = sides.get(side, {})
    if budget.added:
        return added(values, sides.get("direct", {}), budget.metric)
    return values.get(budget.metric, math.nan)


def evaluate(
    budgets: Sequence[Budget], scenarios: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> list[Verdict]:
    """`scenarios[name][side][metric]` -> one verdict per budget (missing figures: NaN)."""
    verdicts = []
    for budget in budgets:
        sides = scenarios.get(budget.scenario, {})
        verdicts.append(
            Verdict(budget, _figure(sides, budget.side, budget), _figure(sides, "floor", budget))
        )
    return verdicts
