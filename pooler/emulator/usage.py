"""Quota windows of a fake account and how they are reported (protocol §1.6, §5).

A window has a fixed origin (the emulator's start) and a length; its resets fall at
`origin + k * length`. Crossing a reset empties it. Pure: every function takes `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PRIMARY_MINUTES = 300
SECONDARY_MINUTES = 10080


@dataclass
class QuotaWindow:
    origin: float
    minutes: int
    used_percent: float = 0.0
    period: int = 0

    @property
    def seconds(self) -> int:
        return self.minutes * 60

    def roll(self, now: float) -> None:
        """Empty the window if `now` is past its reset."""
        period = max(0, math.floor((now - self.origin) / self.seconds))
        if period > self.period:
            self.period = period
            self.used_percent = 0.0

    def reset_at(self, now: float) -> int:
        self.roll(now)
        return math.ceil(self.origin + (self.period + 1) * self.seconds)

    def reset_after(self, now: float) -> int:
        return max(0, int(self.reset_at(now) - now))

    def add(self, percent: float, now: float) -> None:
        self.roll(now)
        self.used_percent = min(100.0, self.used_percent + percent)

    def exhausted(self, now: float) -> bool:
        self.roll(now)
        return self.used_percent >= 100.0


@dataclass(frozen=True)
class WindowView:
    """One window as reported at one instant."""

    used_percent: float
    minutes: int
    reset_at: int
    reset_after: int


def view(window: QuotaWindow, now: float) -> WindowView:
    reset_at = window.reset_at(now)
    return WindowView(window.used_percent, window.minutes, reset_at, max(0, int(reset_at - now)))


def _fmt(percent: float) -> bytes:
    return f"{percent:g}".encode()


def rate_limit_headers(primary: WindowView, secondary: WindowView) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for name, w in ((b"primary", primary), (b"secondary", secondary)):
        prefix = b"x-codex-" + name
        headers += [
            (prefix + b"-used-percent", _fmt(w.used_percent)),
            (prefix + b"-window-minutes", str(w.minutes).encode()),
            (prefix + b"-reset-at", str(w.reset_at).encode()),
            (prefix + b"-reset-after-seconds", str(w.reset_after).encode()),
        ]
    headers += [
        (b"x-codex-credits-has-credits", b"false"),
        (b"x-codex-credits-unlimited", b"false"),
        (b"x-codex-credits-balance", b"0"),
    ]
    return headers


def _window_payload(w: WindowView) -> dict[str, int]:
    return {
        "used_percent": int(w.used_percent),
        "limit_window_seconds": w.minutes * 60,
        "reset_after_seconds": w.reset_after,
        "reset_at": w.reset_at,
    }


def usage_payload(
    plan_type: str, primary: WindowView, secondary: WindowView, extra: dict[str, Any]
) -> dict[str, Any]:
    """The `/wham/usage` body (`RateLimitStatusPayload`)."""
    reached = primary.used_percent >= 100 or secondary.used_percent >= 100
    return {
        **extra,
        "plan_type": plan_type,
        "rate_limit": {
            "allowed": not reached,
            "limit_reached": reached,
            "primary_window": _window_payload(primary),
            "secondary_window": _window_payload(secondary),
        },
        "credits": {
            "has_credits": False,
            "unlimited": False,
            "overage_limit_reached": False,
            "balance": "0",
            "approx_local_messages": [0, 0],
            "approx_cloud_messages": [0, 0],
        },
        "additional_rate_limits": [],
    }


def rate_limits_event(plan_type: str, primary: WindowView, secondary: WindowView) -> dict[str, Any]:
    """The `codex.rate_limits` stream event (sent first on websocket turns)."""

    def window(w: WindowView) -> dict[str, Any]:
        return {"used_percent": w.used_percent, "window_minutes": w.minutes, "reset_at": w.reset_at}

    reached = primary.used_percent >= 100 or secondary.used_percent >= 100
    return {
        "type": "codex.rate_limits",
        "plan_type": plan_type,
        "rate_limits": {
            "allowed": not reached,
            "limit_reached": reached,
            "primary": window(primary),
            "secondary": window(secondary),
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        "metered_limit_name": "codex",
        "limit_name": "codex",
    }
