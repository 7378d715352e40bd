"""The Scheduler under virtual time: jobs run on their interval, or at once first
(`run_first`, a new leader), and each start is counted."""

from __future__ import annotations

import trio
import trio.testing

from pooler.actors.scheduler import Job, Scheduler


async def test_jobs_wait_their_interval_or_run_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[tuple[str, float]] = []

    def job(name: str) -> Job:
        async def run() -> None:
            started.append((name, trio.current_time()))

        return Job(name, 10.0, run)

    plain, first = Scheduler([job("plain")]), Scheduler([job("first")], run_first=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(plain.run)
        await nursery.start(first.run)
        await trio.sleep(25)
        nursery.cancel_scope.cancel()
    assert sorted(started) == [
        ("first", 0.0),
        ("first", 10.0),
        ("first", 20.0),
        ("plain", 10.0),
        ("plain", 20.0),
    ]
    assert plain.runs == {"plain": 2} and first.runs == {"first": 3}
