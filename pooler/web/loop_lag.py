"""Event-loop lag: how late a short sleep wakes up, over the last minute (DESIGN §9)."""

from __future__ import annotations

from collections import deque

import trio

TICK_S = 0.05
WINDOW = 1200  # one minute of ticks


class LoopLagMonitor:
    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=WINDOW)

    async def run(self) -> None:
        while True:
            start = trio.current_time()
            await trio.sleep(TICK_S)
            self.samples.append(max(0.0, trio.current_time() - start - TICK_S))

    def quantile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
