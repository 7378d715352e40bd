"""The loop-lag tick does not count the timer's own resolution (issue 17).

`epoll_wait` takes whole milliseconds, so trio's wait for a deadline is rounded up and
an idle loop wakes up to 1 ms after it. The clock below is virtual and does exactly
that: every wait for a deadline ends at the next whole millisecond at or after it
(counted from when the wait began, as epoll does). No real time is measured."""

from __future__ import annotations

import math

import trio

from pooler.web.loop_lag import TICK_S, LoopLagMonitor

MS = 0.001
TURN = 0.00025  # the loop's own work before each wait: waits begin between milliseconds


class RoundingClock(trio.abc.Clock):
    """Virtual time. Each turn of the loop takes `TURN`; then a wait for `deadline` lasts
    whole milliseconds, the fewest that reach it (epoll's rounding); then `busy` (a turn
    of other work that became runnable meanwhile) when set."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        self.now += TURN
        if deadline > self.now and not math.isinf(deadline):
            self.now += math.ceil(round((deadline - self.now) / MS, 9)) * MS
        self.now += self.busy
        return 0.0


def run_ticks(clock: RoundingClock, ticks: int) -> LoopLagMonitor:
    monitor = LoopLagMonitor()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            while len(monitor.samples) < ticks:
                await trio.sleep(TICK_S / 3)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    return monitor


def test_an_idle_loop_reads_no_lag_under_a_millisecond_timer() -> None:
    monitor = run_ticks(RoundingClock(), 20)
    assert len(monitor.samples) >= 20
    assert max(monitor.samples) == 0.0, list(monitor.samples)


def test_a_loop_busy_past_the_deadline_reads_how_long_past() -> None:
    clock = RoundingClock()
    clock.busy = 3 * MS  # every wait ends with 3 ms of other work before the loop looks
    monitor = run_ticks(clock, 10)
    # Woken up to 1 ms before the deadline, then 3 ms of work: 2-3 ms past it.
    lags = list(monitor.samples)[2:]
    assert lags and all(1.99 * MS <= lag <= 3.01 * MS for lag in lags), lags
