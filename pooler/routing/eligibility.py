"""Hard eligibility: an account failing any check is never chosen (DESIGN §4).

Pure functions; each returns an exclusion code or None.
"""

from __future__ import annotations

from pooler.routing.snapshot import AccountSnapshot, WindowState

NOT_ACTIVE = "not_active"
ACTOR_DOWN = "actor_down"
QUOTA_EXHAUSTED = "quota_exhausted"
AT_CAPACITY = "at_capacity"
COOLING_DOWN = "cooling_down"
EXCLUDED = "already_tried"


def _window_exhausted(window: WindowState | None, threshold: float, now: float) -> float | None:
    """The reset time of a window at or over the threshold, or None if it is usable."""
    if window is None or window.used_percent < threshold:
        return None
    if window.reset_at is not None and window.reset_at <= now:
        return None  # the window has reset since the evidence was taken
    return window.reset_at if window.reset_at is not None else now + 60.0


def quota_blocked_until(snapshot: AccountSnapshot, threshold: float, now: float) -> float | None:
    """When the account's quota is usable again, or None if it is usable now."""
    blocked: float | None = None
    if snapshot.blocked_until is not None and snapshot.blocked_until > now:
        blocked = snapshot.blocked_until
    for window in (snapshot.primary, snapshot.secondary):
        until = _window_exhausted(window, threshold, now)
        if until is not None and (blocked is None or until > blocked):
            blocked = until
    return blocked


def exclusion(snapshot: AccountSnapshot, threshold: float, now: float) -> str | None:
    if not snapshot.alive:
        return ACTOR_DOWN
    if snapshot.lifecycle != "active":
        return NOT_ACTIVE
    if quota_blocked_until(snapshot, threshold, now) is not None:
        return QUOTA_EXHAUSTED
    if snapshot.cooling_until is not None and snapshot.cooling_until > now:
        return COOLING_DOWN
    if snapshot.in_flight >= snapshot.max_in_flight:
        return AT_CAPACITY
    return None
