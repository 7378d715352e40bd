"""The console's page pace: a burst, then the refill rate; sessions apart; bounded."""

from __future__ import annotations

from pooler.admin_ui.page_pace import PagePace


def test_a_burst_then_the_rate() -> None:
    pace = PagePace(rate=10, burst=5)
    assert [pace.wait_s(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert 0.09 < pace.wait_s(1, 0.0) <= 0.1  # the sixth waits for a token
    assert pace.wait_s(1, 0.1) == 0.0  # one token back after 0.1 s
    assert pace.wait_s(2, 0.1) == 0.0  # another session has its own bucket
    assert all(pace.wait_s(1, 10.0 + i) == 0.0 for i in range(20))  # a person's pace


def test_the_buckets_are_bounded() -> None:
    pace = PagePace(rate=1, burst=1, limit=3)
    for session in range(100):
        pace.wait_s(session, 0.0)
    assert len(pace._buckets) == 3
    assert pace.wait_s(99, 0.0) > 0  # the newest are kept
