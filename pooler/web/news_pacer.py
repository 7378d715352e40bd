"""NewsPacer: run a write soon after news, gathering a burst, at a bounded rate.

The continuity pins' write-behind: a conversation pinned anew must reach the database
within milliseconds (another node may get its next turn), so a pin's news is written
`gather` seconds after it arrives rather than at the next tick. Under steady traffic every
response is news, and a write each `gather` (10 ms: a hundred transactions a second, each
a thread hand-off, a round trip, a NOTIFY echoed back to this node's own listener) cost
more CPU per request than the rest of the request's database work. So writes start at
least `spacing` apart: an isolated pin still goes out after `gather`, and no pin waits
longer than `spacing` plus one write.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio


class NewsPacer:
    def __init__(
        self, flush: Callable[[], Awaitable[None]], *, gather: float, spacing: float
    ) -> None:
        """`flush` writes what is new; it must not raise (it logs its own failures)."""
        self._flush = flush
        self.gather = gather
        self.spacing = spacing
        self._news = trio.Event()
        self.flushes = 0

    def news(self) -> None:
        """Something new to write (called from the actors, never waits)."""
        self._news.set()

    async def run(self) -> None:
        last = -math.inf
        while True:
            await self._news.wait()
            await trio.sleep_until(max(trio.current_time() + self.gather, last + self.spacing))
            self._news = trio.Event()
            last = trio.current_time()
            self.flushes += 1
            await self._flush()
