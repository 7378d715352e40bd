"""The Scheduler's jobs that keep the hourly rollups (`pooler.store.rollups`) current.

Every minute the current hour and the previous one are recomputed from raw rows, so the
stats page is at most a minute behind. Rows can reach the database late (the LogWriter
rides out a database outage with its buffer; another node's clock), so every ten minutes
the last six hours are recomputed too: a row later than that is caught only by
`pooler admin stats rebuild`. They run once per cluster, on the leader (`pooler.roles`);
each pass is idempotent and takes the rollup lock, so a pass that overlaps a leader
change (or a manual rebuild) is harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from pooler.actors.scheduler import Job
from pooler.db import Database
from pooler.store.rollups import Recomputed, recompute_recent

RECENT_INTERVAL_S: Final = 60.0
RECENT_HOURS: Final = 2  # the current hour and the previous one
LATE_INTERVAL_S: Final = 600.0
LATE_HOURS: Final = 6
LATE_TIMEOUT_S: Final = 300.0


class StatsRollups:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def recent(self) -> Recomputed:
        return await self._recompute(RECENT_HOURS)

    async def late(self) -> Recomputed:
        return await self._recompute(LATE_HOURS)

    async def _recompute(self, hours: int) -> Recomputed:
        now = datetime.now(UTC)
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
