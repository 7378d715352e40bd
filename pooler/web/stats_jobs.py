"""The Scheduler's jobs that keep the hourly rollups (`pooler.store.rollups`) current.

Every minute the current hour is recomputed from raw rows, so the stats page is at most a
minute behind; in the first `PREVIOUS_HOUR_GRACE_S` of an hour the previous hour is
recomputed too, for the rows written just after it ended (the LogWriter writes a row
within a second or so). Rows can reach the database later than that (the LogWriter
rides out a database outage with its buffer; another node's clock), so every ten minutes
the six hours before the current one are recomputed too (the current one is the
per-minute pass's): a row later than that is caught only by
`pooler admin stats rebuild`. They run once per cluster, on the leader (`pooler.roles`);
each pass is idempotent and takes the rollup lock, so a pass that overlaps a leader
change (or a manual rebuild) is harmless.

Why not the previous hour every minute (issue 17): a pass reads every raw row of the hours
it recomputes (~5-7 ms per thousand rows on the bench's loaded 2-core VM: 300,000 rows in
the two hours took 1.4-2.3 s every minute, a core taken from the requests for that long
where the database shares the gateway's machine), and at a steady load the previous hour
was two thirds of each pass's work, for rows that had stopped changing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from pooler.actors.scheduler import Job
from pooler.db import Database
from pooler.store.rollups import HOUR, Recomputed, hour_of, recompute_hours, recompute_recent

RECENT_INTERVAL_S: Final = 60.0
PREVIOUS_HOUR_GRACE_S: Final = 300.0
LATE_INTERVAL_S: Final = 600.0
LATE_HOURS: Final = 6
LATE_TIMEOUT_S: Final = 300.0


def recent_hours(now: datetime) -> int:
    """How many hours up to `now`'s the per-minute pass recomputes: the current one, and
    the previous one too while the current one is younger than PREVIOUS_HOUR_GRACE_S."""
    into_hour = (now - hour_of(now)).total_seconds()
    return 2 if into_hour < PREVIOUS_HOUR_GRACE_S else 1


class StatsRollups:
    def __init__(self, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    async def recent(self) -> Recomputed:
        return await self._recompute(recent_hours(self._clock()))

    async def late(self) -> Recomputed:
        """The LATE_HOURS hours before the current one."""
        current = hour_of(self._clock())
        first, last = current - LATE_HOURS * HOUR, current - HOUR
        return await self.db.run(lambda conn: recompute_hours(conn, first, last))

    async def _recompute(self, hours: int) -> Recomputed:
        now = self._clock()
        return await self.db.run(lambda conn: recompute_recent(conn, now, hours))

    def jobs(self) -> list[Job]:
        return [
            Job("stats_rollup", RECENT_INTERVAL_S, self._run_recent),
            Job("stats_rollup_late", LATE_INTERVAL_S, self._run_late, timeout_s=LATE_TIMEOUT_S),
        ]

    async def _run_recent(self) -> None:
        await self.recent()

    async def _run_late(self) -> None:
        await self.late()
