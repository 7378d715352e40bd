"""The console's page pace: a burst, then slots at the rate; too far a slot is refused;
sessions apart; bounded."""

from __future__ import annotations

import pytest

from pooler.admin_ui.page_pace import PagePace


def test_a_burst_then_slots_at_the_rate() -> None:
    pace = PagePace(rate=10, burst=5)
    assert [pace.reserve(1, 0.0) for _ in range(5)] == [0.0] * 5
    waits = [pace.reserve(1, 0.0, max_wait_s=0.35) for _ in range(5)]
    assert waits[:3] == pytest.approx([0.1, 0.2, 0.3])  # the next slots, reserved in turn
    assert waits[3:] == [None, None]  # too far: refused, and a refusal reserves nothing
    assert pace.reserve(2, 0.0) == 0.0  # another session has its own bucket
    assert all(pace.reserve(1, 10.0 + i) == 0.0 for i in range(20))  # a person's pace


def test_the_buckets_are_bounded() -> None:
    pace = PagePace(rate=1, burst=1, limit=3)
    for session in range(100):
        pace.reserve(session, 0.0)
    assert len(pace._buckets) == 3
    assert pace.reserve(99, 0.0) == 1.0  # the newest are kept: its next slot is 1 s away
