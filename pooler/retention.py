"""Retention: the once-per-cluster job that prunes old request logs, attempts and audit
events (instance settings `retention.*`; 0 days keeps a table's rows for ever).

Each run reads the settings, then prunes table by table in small batches
(`pooler.store.retention`): every batch its own short transaction, a pause between
batches, and at most `max_batches` per table per run, so a large backlog (a first run, a
shortened retention) goes over several runs without ever holding a lock for long.
Cutoffs fall on a UTC hour, so request logs go whole hours at a time, and the hourly and
daily stats (which are never pruned) keep what those hours held.

What went is logged (counts only) and, when anything did, recorded as the audit event
`retention.pruned` (actor `system`, the counts and cutoffs in its details), written after
the audit trail's own pruning so it is never its own victim.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import trio

from pooler.actors.scheduler import Job
from pooler.db import Database
from pooler.instance_settings import RetentionSettings
from pooler.store.common import Conn, insert_audit_row
from pooler.store.instance_settings import get_instance_settings
from pooler.store.retention import (
    Batch,
    prune_attempts,
    prune_audit_events,
    prune_request_logs,
)
from pooler.store.rollups import hour_of

log = logging.getLogger("pooler.retention")

INTERVAL_S: Final = 900.0
TIMEOUT_S: Final = 600.0
BATCH_ROWS: Final = 2000
PAUSE_S: Final = 0.1
MAX_BATCHES: Final = 100  # per table per run: 200,000 rows


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these go (None: that table is kept for ever)."""

    request_logs: datetime | None
    attempts: datetime | None
    audit_events: datetime | None


def cutoffs(settings: RetentionSettings, now: datetime) -> Cutoffs:
    """Each table's cutoff: `days` before `now`, down to its UTC hour. Attempts go at the
    shorter of their own retention and their request's (they never outlive it)."""

    def before(days: int) -> datetime | None:
        return hour_of(now - timedelta(days=days)) if days else None

    kept = [d for d in (settings.attempts_days, settings.request_logs_days) if d]
    return Cutoffs(
        before(settings.request_logs_days),
        before(min(kept)) if kept else None,
        before(settings.audit_days),
    )


@dataclass(slots=True)
class Pruned:
    """What one run deleted, by table, and whether a table still has rows past its cutoff
    (the run's bound was reached: the next run goes on)."""

    request_logs: int = 0
    attempts: int = 0
    audit_events: int = 0
    unfinished: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.request_logs + self.attempts + self.audit_events


PruneBatch = Callable[[Conn, datetime, int], Batch]


class Retention:
    def __init__(
        self,
        db: Database,
        *,
        batch_rows: int = BATCH_ROWS,
        pause_s: float = PAUSE_S,
        max_batches: int = MAX_BATCHES,
        pause: Callable[[float], Awaitable[None]] = trio.sleep,
    ) -> None:
        self.db = db
        self.batch_rows = batch_rows
        self.pause_s = pause_s
        self.max_batches = max_batches
        self._pause = pause

    def jobs(self) -> list[Job]:
        return [Job("retention", INTERVAL_S, self._run, timeout_s=TIMEOUT_S)]

    async def _run(self) -> None:
        await self.run_once()

    async def run_once(self, now: datetime | None = None) -> Pruned:
        _, settings = await self.db.run(get_instance_settings)
        at = cutoffs(settings.retention, now or datetime.now(UTC))
        pruned = Pruned()
        plan: list[tuple[str, PruneBatch, datetime | None]] = [
            ("attempts", prune_attempts, at.attempts),  # first: never outlive their request
            ("request_logs", prune_request_logs, at.request_logs),
            ("audit_events", prune_audit_events, at.audit_events),
        ]
        for table, batch, cutoff in plan:
            if cutoff is None:
                continue
            deleted, finished = await self._prune(batch, cutoff)
            setattr(pruned, table, deleted)
            if not finished:
                pruned.unfinished.append(table)
        if pruned.total:
            await self.db.run(lambda conn: _record(conn, pruned, at))
            log.info(
                "retention pruned request_logs=%d attempts=%d audit_events=%d%s",
                pruned.request_logs,
                pruned.attempts,
                pruned.audit_events,
                f" (more left: {', '.join(pruned.unfinished)})" if pruned.unfinished else "",
            )
        return pruned

    async def _prune(self, batch: PruneBatch, cutoff: datetime) -> tuple[int, bool]:
        """Rows deleted from one table, and whether none past `cutoff` is left."""
        deleted = 0
        limit = self.batch_rows
        for n in range(self.max_batches):
            if n:
                await self._pause(self.pause_s)
            result = await self.db.run(lambda conn: batch(conn, cutoff, limit))
            deleted += result.deleted
            if result.done:
                return deleted, True
        return deleted, False


def _record(conn: Conn, pruned: Pruned, at: Cutoffs) -> None:
    insert_audit_row(
        conn,
        "system",
        "retention.pruned",
        "instance",
        "retention",
        {
            "request_logs": pruned.request_logs,
            "attempts": pruned.attempts,
            "audit_events": pruned.audit_events,
            "before": {
                name: moment.isoformat()
                for name, moment in (
                    ("request_logs", at.request_logs),
                    ("attempts", at.attempts),
                    ("audit_events", at.audit_events),
                )
                if moment is not None
            },
            "more_left": list(pruned.unfinished),
        },
    )
