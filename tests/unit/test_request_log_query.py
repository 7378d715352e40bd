"""The request-log filter and its SQL (pure parts of `pooler.store.request_log_query`):
hostile values only ever travel as parameters, times parse in UTC with a 24-hour default,
the page cursor survives its round trip, and an empty resolution matches nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.store import request_log_query as q

NOW = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def test_defaults_are_the_last_24_hours_up_to_now() -> None:
    got = q.parse_filter({}, NOW)
    assert (got.since, got.until) == (NOW - timedelta(hours=24), NOW)
    to_only = q.parse_filter({"to": "2026-12-01T10:00"}, NOW)
    assert to_only.since == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
        ("2026-12-01 10:00:30", datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T12:00+02:00", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_utc(text: str, expected: datetime) -> None:
    assert q.parse_time(text, "from") == expected


def test_the_cursor_survives_its_round_trip() -> None:
    cursor = q.Cursor(datetime(2026, 12, 6, 4, 1, 2, 345678, tzinfo=UTC), uuid4())
    assert q.parse_cursor(cursor.text()) == cursor
    assert q.parse_cursor("") is None
    for bad in ("x", "2026-12-06T04:01:02_x", "2026-12-06T04:01:02_" + str(uuid4())):
        with pytest.raises(q.FilterError):
            q.parse_cursor(bad)  # the last: no offset


def hostile_filter(value: str) -> q.LogFilter:
    return q.LogFilter(
        since=NOW - timedelta(hours=1),
        until=NOW,
        pool_ids=frozenset({UUID(int=1), UUID(int=2)}),
        key_prefixes=(value,),
        account_ids=(UUID(int=7),),
        status_class=5,
        error_code=value,
        model=value,
        route=value,
        transport=value,
        continuity=value,
    )


@given(st.text(max_size=80))
def test_hostile_values_never_reach_the_sql_text(value: str) -> None:
    """The SQL depends on the filter's shape only: any value gives the same text, and the
    value is among the parameters, once per column it filters."""
    cursor = q.Cursor(NOW, UUID(int=9))
    sql, params = q.page_sql(hostile_filter(value), cursor)
    plain_sql, _ = q.page_sql(hostile_filter("plain"), cursor)
    assert sql == plain_sql
    assert sql.count("%s") == len(params)
    assert params.count(value) == 6  # key, error code, model, route, transport, continuity
    assert "LIMIT %s" in sql and "OFFSET" not in sql


def test_an_empty_resolution_matches_nothing() -> None:
    flt = q.LogFilter(since=NOW - timedelta(hours=1), until=NOW, key_prefixes=())
    assert q.where_sql(flt) == ("FALSE", [])
    assert q.where_sql(q.LogFilter(NOW - timedelta(hours=1), NOW, frozenset())) == ("FALSE", [])


def test_the_export_range_is_bounded() -> None:
    month = q.LogFilter(since=NOW - timedelta(days=31), until=NOW)
    q.check_range(month, timedelta(days=31))
    with pytest.raises(q.FilterError, match="at most 31 days"):
        q.check_range(q.LogFilter(NOW - timedelta(days=32), NOW), timedelta(days=31))
