"""The evidence a headerless usage-limit answer becomes (pooler.routing.evidence): a full
window until the answer's reset time, the known window whose reset is nearest."""

from __future__ import annotations

from pooler.protocol.ratelimit import RateLimitSnapshot, ReportedWindow
from pooler.routing.evidence import reports_windows, usage_limit_evidence
from pooler.routing.snapshot import AccountSnapshot, WindowState

NOW = 1_800_000_000.0
FULL_AT_T = ReportedWindow(100.0, None, NOW + 600)


def snapshot(primary_reset: float | None, secondary_reset: float | None) -> AccountSnapshot:
    return AccountSnapshot(
        "id",
        "account-1",
        primary=None if primary_reset is None else WindowState(40.0, primary_reset, NOW),
        secondary=None if secondary_reset is None else WindowState(90.0, secondary_reset, NOW),
    )


def test_nothing_known_means_the_primary_window() -> None:
    out = usage_limit_evidence(snapshot(None, None), NOW + 600)
    assert (out.primary, out.secondary) == (FULL_AT_T, None)


def test_the_window_whose_reset_is_nearest_is_the_full_one() -> None:
    weekly = usage_limit_evidence(snapshot(NOW + 3_000, NOW + 590), NOW + 600)
    assert (weekly.primary, weekly.secondary) == (None, FULL_AT_T)
    short = usage_limit_evidence(snapshot(NOW + 610, NOW + 500_000), NOW + 600)
    assert (short.primary, short.secondary) == (FULL_AT_T, None)


def test_reports_windows() -> None:
    assert not reports_windows(None)
    assert not reports_windows(RateLimitSnapshot(None, None, None, {}, "plus", None))
    assert reports_windows(RateLimitSnapshot(FULL_AT_T, None, None, {}, None, None))
