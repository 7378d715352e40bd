"""Which hours the rollup passes read (issue 17): the per-minute one the current hour, and
the previous one only in the first minutes after it ended; the ten-minute one the six
hours before the current one (not the current one again). A pass reads every raw row of
the hours it recomputes, so a closed hour recomputed every minute was most of the job's
database work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pooler.db import Database
from pooler.store import logs
from pooler.store.models import RequestLogRow
from pooler.web.stats_jobs import LATE_HOURS, PREVIOUS_HOUR_GRACE_S, StatsRollups

HOUR = datetime(2026, 3, 4, 11, tzinfo=UTC)


def row(n: int, at: datetime) -> RequestLogRow:
    return RequestLogRow(
        request_id=f"req_hours_{n}",
        created_at=at,
        route="responses",
        pool_id=None,
        outcome="completed",
        status_code=200,
        duration_ms=12.0,
    )


def rollup_hours(database: Database) -> dict[datetime, int]:
    return dict(
        (hour.astimezone(UTC), int(requests))
        for hour, requests in database.run_sync(
            lambda conn: conn.execute(
                "SELECT hour, sum(requests) FROM stats_hourly GROUP BY hour"
            ).fetchall()
        )
    )


@pytest.fixture
def rows_in_two_hours(database: Database) -> Database:
    database.run_sync(
        lambda conn: logs.insert_request_logs(
            conn,
            [
                row(1, HOUR - timedelta(minutes=20)),
                row(2, HOUR - timedelta(seconds=1)),
                row(3, HOUR + timedelta(minutes=1)),
            ],
        )
    )
    return database


async def test_mid_hour_the_pass_reads_the_current_hour_only(rows_in_two_hours: Database) -> None:
    stats = StatsRollups(rows_in_two_hours, clock=lambda: HOUR + timedelta(minutes=30))
    done = await stats.recent()
    assert done.hours == 1
    assert rollup_hours(rows_in_two_hours) == {HOUR: 1}


async def test_just_after_the_hour_the_previous_one_is_read_too(
    rows_in_two_hours: Database,
) -> None:
    just_after = HOUR + timedelta(seconds=PREVIOUS_HOUR_GRACE_S - 1)
    done = await StatsRollups(rows_in_two_hours, clock=lambda: just_after).recent()
    assert done.hours == 2
    assert rollup_hours(rows_in_two_hours) == {HOUR - timedelta(hours=1): 2, HOUR: 1}


async def test_the_late_pass_reads_the_six_hours_before_the_current_one(
    rows_in_two_hours: Database,
) -> None:
    stats = StatsRollups(rows_in_two_hours, clock=lambda: HOUR + timedelta(minutes=30))
    done = await stats.late()
    assert done.hours == LATE_HOURS
    assert rollup_hours(rows_in_two_hours) == {HOUR - timedelta(hours=1): 2}
    await stats.recent()
    assert rollup_hours(rows_in_two_hours) == {HOUR - timedelta(hours=1): 2, HOUR: 1}
