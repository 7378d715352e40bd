"""Quota windows of a fake account and how they are reported (protocol §1.6, §5).

A window has a fixed origin (the emulator's start) and a length; its resets fall at
`origin + k * length`. Crossing a reset empties it. Pure: every function takes `now`.

Besides the default `codex` family an account may have extra metered families (a
`LimitFamily`, e.g. `codex_bengalfox` named `GPT-5.3-Codex-Spark`): reported under their
own header prefix (`x-codex-bengalfox-*`), as an `additional_rate_limits` entry of
`/wham/usage` and as their own `codex.rate_limits` event, and applying only to requests
for the model their limit name spells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PRIMARY_MINUTES = 300
SECONDARY_MINUTES = 10080


@dataclass
class EmulatedWindow:
    """The emulator's own rolling quota window, which it fills and resets."""

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


@dataclass
class LimitFamily:
    """An extra metered limit family: its id (`codex_bengalfox`), display name (a model
    name: the limit applies to that model only) and its two windows."""

    family: str
    limit_name: str
    primary: EmulatedWindow
    secondary: EmulatedWindow

    @property
    def header_prefix(self) -> bytes:
        return b"x-" + self.family.replace("_", "-").encode()

    def applies_to(self, model: str) -> bool:
        return bool(model) and model_key(model) == model_key(self.limit_name)


def model_key(name: str) -> str:
    """`GPT-5.3-Codex-Spark`, `gpt-5.3-codex-spark` and `gpt 5.3 codex spark` match."""
    return "".join(ch for ch in name.casefold() if ch.isalnum() or ch == ".")


@dataclass(frozen=True)
class WindowView:
    """One window as reported at one instant."""

    used_percent: float
    minutes: int
    reset_at: int
    reset_after: int


def view(window: EmulatedWindow, now: float) -> WindowView:
    reset_at = window.reset_at(now)
    return WindowView(window.used_percent, window.minutes, reset_at, max(0, int(reset_at - now)))


def _fmt(percent: float) -> bytes:
    return f"{percent:g}".encode()


def window_headers(
    family_prefix: bytes, primary: WindowView, secondary: WindowView
) -> list[tuple[bytes, bytes]]:
    """`<prefix>-primary-used-percent` and the rest, new and old reset headers together."""
    headers: list[tuple[bytes, bytes]] = []
    for name, w in ((b"primary", primary), (b"secondary", secondary)):
        prefix = family_prefix + b"-" + name
        headers += [
            (prefix + b"-used-percent", _fmt(w.used_percent)),
            (prefix + b"-window-minutes", str(w.minutes).encode()),
            (prefix + b"-reset-at", str(w.reset_at).encode()),
            (prefix + b"-reset-after-seconds", str(w.reset_after).encode()),
        ]
    return headers


def family_headers(
    family: LimitFamily, primary: WindowView, secondary: WindowView
) -> list[tuple[bytes, bytes]]:
    """An extra family's windows (`x-codex-bengalfox-*`) and its `-limit-name`."""
    headers = window_headers(family.header_prefix, primary, secondary)
    headers.append((family.header_prefix + b"-limit-name", family.limit_name.encode()))
    return headers


def rate_limit_headers(primary: WindowView, secondary: WindowView) -> list[tuple[bytes, bytes]]:
    headers = window_headers(b"x-codex", primary, secondary)
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


def _rate_limit_payload(primary: WindowView, secondary: WindowView) -> dict[str, Any]:
    reached = primary.used_percent >= 100 or secondary.used_percent >= 100
    return {
        "allowed": not reached,
        "limit_reached": reached,
        "primary_window": _window_payload(primary),
        "secondary_window": _window_payload(secondary),
    }


def additional_rate_limit(
    family: LimitFamily, primary: WindowView, secondary: WindowView
) -> dict[str, Any]:
    """One `additional_rate_limits` entry of `/wham/usage`."""
    return {
        "limit_name": family.limit_name,
        "metered_feature": family.family,
        "rate_limit": _rate_limit_payload(primary, secondary),
    }


def usage_payload(
    plan_type: str,
    primary: WindowView,
    secondary: WindowView,
    extra: dict[str, Any],
    additional: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `/wham/usage` body (`RateLimitStatusPayload`)."""
    return {
        **extra,
        "plan_type": plan_type,
        "rate_limit": _rate_limit_payload(primary, secondary),
        "credits": {
            "has_credits": False,
            "unlimited": False,
            "overage_limit_reached": False,
            "balance": "0",
            "approx_local_messages": [0, 0],
            "approx_cloud_messages": [0, 0],
        },
        "additional_rate_limits": additional or [],
    }


def rate_limits_event(
    plan_type: str,
    primary: WindowView,
    secondary: WindowView,
    family: LimitFamily | None = None,
) -> dict[str, Any]:
    """The `codex.rate_limits` stream event (sent first on websocket turns): the default
    family's, or with `family` that extra family's (named by `metered_limit_name`)."""

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
        "metered_limit_name": family.family if family else "codex",
        "limit_name": family.limit_name if family else "codex",
    }
