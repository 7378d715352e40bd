"""The Scheduler: periodic jobs (usage polling ticks, write-behind flushes, rollups) in one
nursery.

Each job runs on its own interval; a job that fails is logged and runs again next time, a
job that overruns its deadline is cancelled. Nothing here owns routing state: jobs send
messages to the actors that do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

log = logging.getLogger("pooler.scheduler")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval_s: float
    run: Callable[[], Awaitable[None]]
    timeout_s: float = 60.0


class Scheduler:
    """`run_first`: each job runs once as soon as `run` starts, then on its interval (a
    new leader catches up at once on what the previous one may have left mid-interval)."""

    def __init__(self, jobs: Sequence[Job], *, run_first: bool = False) -> None:
        self.jobs = tuple(jobs)
        self.run_first = run_first
        self.failures: dict[str, int] = {job.name: 0 for job in self.jobs}
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for job in self.jobs:
                nursery.start_soon(self._loop, job)
            task_status.started()

    async def _loop(self, job: Job) -> None:
        first = self.run_first
        while True:
            if not first:
                await trio.sleep(job.interval_s)
            first = False
            self.runs[job.name] += 1
            with trio.move_on_after(job.timeout_s) as scope:
                try:
                    await job.run()
                except Exception as exc:  # the job runs again next interval
                    self.failures[job.name] += 1
                    log.warning("scheduled job %s failed: %s", job.name, type(exc).__name__)
            if scope.cancelled_caught:
                self.failures[job.name] += 1
                log.warning("scheduled job %s overran %.0f s", job.name, job.timeout_s)
