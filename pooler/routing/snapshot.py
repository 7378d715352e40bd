"""What the PoolSupervisor knows about each account: a snapshot the AccountActor pushes."""

from __future__ import annotations

from dataclasses import dataclass

LIFECYCLE_ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class WindowState:
    used_percent: float
    reset_at: float | None


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Everything routing needs about one account, as of its last state change.

    Times are epoch seconds (quota resets come from the upstream as epoch seconds).
    """

    account_id: str
    label: str
    lifecycle: str = LIFECYCLE_ACTIVE
    plan_type: str | None = None
    in_flight: int = 0
    max_in_flight: int = 32
    primary: WindowState | None = None
    secondary: WindowState | None = None
    blocked_until: float | None = None  # an upstream usage_limit_reached answer
    cooling_until: float | None = None  # transient failures (5xx, 429 rate limit, connect)
    alive: bool = True

    @property
    def max_used_percent(self) -> float:
        used = 0.0
        for window in (self.primary, self.secondary):
            if window is not None and window.used_percent > used:
                used = window.used_percent
        return used
