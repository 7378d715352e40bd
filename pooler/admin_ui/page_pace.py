"""How fast one console session may ask for pages: a token bucket per session, in memory.

The console shares the gateway's process and core. A person pages at a few pages a
second and never meets this bound; a script paging flat out (100+ pages a second) took
CPU from the gateway's requests (`ops/bench/README.md`, "The console beside the
gateway"). Past the burst a page waits for its slot (a waiting request costs no CPU, so a
script is slowed to the rate); a page whose slot is more than `MAX_WAIT_S` away is
refused (429) before any work. Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PAGES_PER_SECOND: Final = 10.0
BURST: Final = 40.0
MAX_SESSIONS: Final = 10_000  # more buckets than this: the oldest are forgotten
MAX_WAIT_S: Final = 2.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class PagePace:
    def __init__(
        self, rate: float = PAGES_PER_SECOND, burst: float = BURST, limit: int = MAX_SESSIONS
    ) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._buckets: dict[int, _Bucket] = {}

    def reserve(self, session: int, now: float, max_wait_s: float = MAX_WAIT_S) -> float | None:
        """Seconds until `session`'s next page may run (0: now), its slot reserved; None
        when that is more than `max_wait_s` away (nothing reserved)."""
        bucket = self._buckets.pop(session, None)  # re-inserted last: the newest
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if len(self._buckets) >= self.limit:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[session] = bucket
        wait_s = max(0.0, (1.0 - bucket.tokens) / self.rate)
        if wait_s > max_wait_s:
            return None
        bucket.tokens -= 1.0
        return wait_s
