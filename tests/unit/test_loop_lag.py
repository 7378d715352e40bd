from __future__ import annotations

import time

import trio

from pooler.web.loop_lag import LoopLagMonitor


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
