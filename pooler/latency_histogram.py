"""The fixed latency histogram of the hourly rollups: log-spaced buckets, and the p50/p95
read back from them with a stated bound on the error.

Buckets. `EDGES[k] = 2 ** (k / 4)` ms for k = 0..96 (1 ms to 2**24 ms, about 4.7 h). A
duration d falls in bucket `bisect_right(EDGES, d)`: bucket 0 holds d < 1 ms, bucket k
(1..96) holds `EDGES[k-1] <= d < EDGES[k]`, bucket 97 holds d >= 2**24 ms. The database
computes the same index with `width_bucket(d, EDGES)` on the same float8 edges, so Python
and SQL agree bucket for bucket.

Storage is sparse: two parallel arrays (bucket indexes ascending, their counts), so merging
many rollup rows costs what they hold, not 98 cells each.

Percentiles are nearest-rank: the p-th of n values is the ceil(p*n/100)-th smallest. The
histogram finds the bucket holding that value exactly and answers the bucket's geometric
middle, so for a true value v in buckets 1..96 the answer a satisfies
`v / BOUND <= a <= v * BOUND` with `BOUND = 2 ** (1/8)` (within 9.05 %). Below 1 ms the
answer is 0.5 ms (off by at most 0.5 ms); past 2**24 ms it is 2**24 ms (a lower bound).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Final

STEPS_PER_DOUBLING: Final = 4
EDGES: Final[tuple[float, ...]] = tuple(
    2.0 ** (k / STEPS_PER_DOUBLING) for k in range(24 * STEPS_PER_DOUBLING + 1)
)
BUCKETS: Final = len(EDGES) + 1  # 98: under 1 ms, 96 log-spaced, and the overflow
BOUND: Final[float] = 2.0 ** (1 / (2 * STEPS_PER_DOUBLING))  # the answer is within this factor
UNDER_1MS: Final = 0.5


def bucket_of(duration_ms: float) -> int:
    return bisect_right(EDGES, duration_ms)


def representative(bucket: int) -> float:
    """The value a percentile landing in `bucket` is reported as."""
    if bucket <= 0:
        return UNDER_1MS
    if bucket >= len(EDGES):
        return EDGES[-1]
    return math.sqrt(EDGES[bucket - 1] * EDGES[bucket])


def merge(parts: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Bucket -> count summed over `parts`."""
    total: dict[int, int] = {}
    for part in parts:
        for bucket, count in part.items():
            total[bucket] = total.get(bucket, 0) + count
    return total


def rank_of(percent: int, n: int) -> int:
    """The nearest rank of the `percent`-th percentile among n values (integer arithmetic:
    no float rounding decides a rank)."""
    return max(1, -(-percent * n // 100))


def percentile(counts: Mapping[int, int], percent: int) -> float | None:
    """The nearest-rank `percent`-th percentile (1..100) of the values counted in `counts`;
    None when it counts nothing."""
    n = sum(counts.values())
    if n <= 0:
        return None
    rank = rank_of(percent, n)
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return representative(bucket)
    return representative(max(counts))  # unreachable: seen reaches n
