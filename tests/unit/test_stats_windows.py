"""The stats page's windows: whole UTC hours overlapping the span, and chart buckets
aligned like the SQL's date_bin (UTC midnight for days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pooler.admin_ui.stats_page import WINDOWS, bucket_starts, window_bounds

NOW = datetime(2026, 12, 6, 4, 30, 12, tzinfo=UTC)


def test_windows_cover_the_whole_hours_overlapping_their_span() -> None:
    assert window_bounds(WINDOWS["1h"], NOW) == (
        datetime(2026, 12, 6, 3, tzinfo=UTC),
        datetime(2026, 12, 6, 5, tzinfo=UTC),
    )
    since, until = window_bounds(WINDOWS["24h"], NOW)
    assert (until - since) == timedelta(hours=25)
    assert len(bucket_starts(WINDOWS["24h"], since, until)) == 25


def test_daily_buckets_start_at_utc_midnight() -> None:
    since, until = window_bounds(WINDOWS["30d"], NOW)
    days = bucket_starts(WINDOWS["30d"], since, until)
    assert days[0] == datetime(2026, 11, 6, tzinfo=UTC)
    assert days[-1] == datetime(2026, 12, 6, tzinfo=UTC) and len(days) == 31
    week = bucket_starts(WINDOWS["7d"], *window_bounds(WINDOWS["7d"], NOW))
    assert len(week) == 8 and all(d.hour == 0 for d in week)


def test_a_moment_in_another_zone_is_read_in_utc() -> None:
    kolkata = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))  # a half-hour offset
    assert window_bounds(WINDOWS["1h"], kolkata) == window_bounds(WINDOWS["1h"], NOW)
