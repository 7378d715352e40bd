"""A Pool's usage as one Codex `RateLimitStatusPayload` (protocol §1.6), and how
many of its accounts are usable now. Pure.

The Codex CLI reads `/wham/usage` for its status line; behind a Pool key that status is the
Pool's, not one account's:

- a window's `used_percent` is the mean over the Pool's active accounts (no evidence, or
  evidence older than the window's reset, counts as 0 %);
- `limit_reached` only when no active account can serve (each is blocked by its quota);
- a window's `reset_at` is the earliest reset among the accounts that window blocks, or,
  when it blocks none, the earliest known reset of the window;
- `plan_type` is the Pool's most common plan.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pooler.routing.eligibility import (
    DEFAULT_FRESHNESS_S,
    account_block,
    quota_block,
    window_blocked_until,
)
from pooler.routing.snapshot import LIFECYCLE_ACTIVE, AccountSnapshot, WindowState

PRIMARY_WINDOW_S = 5 * 3600
SECONDARY_WINDOW_S = 7 * 24 * 3600
UNKNOWN_PLAN = "unknown"


def serving_members(snapshots: Iterable[AccountSnapshot]) -> list[AccountSnapshot]:
    """The accounts that count: running and active (paused or broken ones do not serve)."""
    return [s for s in snapshots if s.alive and s.lifecycle == LIFECYCLE_ACTIVE]


def usable_count(
    snapshots: Iterable[AccountSnapshot],
    now: float,
    *,
    threshold: float = 100.0,
    freshness: float = DEFAULT_FRESHNESS_S,
) -> int:
    """How many of the Pool's members the router would lease now: the router's own check
    (`account_block`: running, active, under quota, not cooling down, below capacity)."""
    return sum(1 for s in snapshots if account_block(s, threshold, now, freshness) is None)


def current_percent(window: WindowState | None, now: float) -> float:
    """What is used of a window now: 0 without evidence or when it has reset since."""
    if window is None or (window.reset_at is not None and window.reset_at <= now):
        return 0.0
    return min(100.0, max(0.0, window.used_percent))


def pool_window(
    windows: Sequence[WindowState | None],
    blocked_until: Sequence[float | None],
    window_seconds: int,
    now: float,
) -> dict[str, int]:
    """One aggregated window from each member's window and when it blocks that member."""
    used = sum(current_percent(w, now) for w in windows) / len(windows) if windows else 0.0
    blocked = [until for until in blocked_until if until is not None and until > now]
    if blocked:
        reset_at = min(blocked)
    else:
        known = [w.reset_at for w in windows if w is not None and w.reset_at is not None]
        future = [r for r in known if r > now]
        reset_at = min(future) if future else now + window_seconds
    reset_at = math.ceil(reset_at)
    return {
        "used_percent": round(used),
        "limit_window_seconds": window_seconds,
        "reset_after_seconds": max(0, int(reset_at - now)),
        "reset_at": reset_at,
    }


def pool_plan_type(snapshots: Iterable[AccountSnapshot]) -> str:
    """The most common plan; ties go to the alphabetically first, for a stable answer."""
    counts = Counter(s.plan_type for s in snapshots if s.plan_type)
    if not counts:
        return UNKNOWN_PLAN
    return min(counts, key=lambda plan: (-counts[plan], plan))


def pool_usage(
    snapshots: Iterable[AccountSnapshot],
    now: float,
    *,
    threshold: float = 100.0,
    freshness: float = DEFAULT_FRESHNESS_S,
) -> dict[str, Any]:
    """The `RateLimitStatusPayload` of a Pool whose members are `snapshots`."""
    every = list(snapshots)
    members = serving_members(every)
    plan_type = pool_plan_type(members) if members else pool_plan_type(every)
    if not members:
        return {
            "plan_type": plan_type,
            "rate_limit": {
                "allowed": False,
                "limit_reached": True,
                "primary_window": None,
                "secondary_window": None,
            },
            "credits": {"has_credits": False, "unlimited": False, "balance": None},
            "additional_rate_limits": None,
        }

    def blocks(window: WindowState | None, snapshot: AccountSnapshot) -> float | None:
        return window_blocked_until(
            window, threshold, now, has_credits=snapshot.has_credits, freshness=freshness
        )

    primary_blocks: list[float | None] = []
    secondary_blocks: list[float | None] = []
    for s in members:
        p, w = blocks(s.primary, s), blocks(s.secondary, s)
        if p is None and w is None and s.blocked_until is not None and s.blocked_until > now:
            p = s.blocked_until  # an upstream usage_limit_reached answer without windows
        primary_blocks.append(p)
        secondary_blocks.append(w)
    limit_reached = all(quota_block(s, threshold, now, freshness) is not None for s in members)
    return {
        "plan_type": plan_type,
        "rate_limit": {
            "allowed": not limit_reached,
            "limit_reached": limit_reached,
            "primary_window": pool_window(
                [s.primary for s in members], primary_blocks, PRIMARY_WINDOW_S, now
            ),
            "secondary_window": pool_window(
                [s.secondary for s in members], secondary_blocks, SECONDARY_WINDOW_S, now
            ),
        },
        "credits": {
            "has_credits": any(s.has_credits for s in members),
            "unlimited": False,
            "balance": None,
        },
        "additional_rate_limits": _scoped_limits(members, now, threshold, freshness) or None,
    }


def _scoped_limits(
    members: Sequence[AccountSnapshot], now: float, threshold: float, freshness: float
) -> list[dict[str, Any]]:
    """Extra limit families (a model's own quota), each averaged over every member."""
    families: dict[str, str] = {}
    for s in members:
        for limit in s.scoped:
            families.setdefault(limit.family, limit.scope)
    out: list[dict[str, Any]] = []
    for family, scope in sorted(families.items()):
        primaries: list[WindowState | None] = []
        secondaries: list[WindowState | None] = []
        p_blocks: list[float | None] = []
        s_blocks: list[float | None] = []
        all_blocked = True
        for s in members:
            found = next((x for x in s.scoped if x.family == family), None)
            p = found.primary if found else None
            w = found.secondary if found else None
            primaries.append(p)
            secondaries.append(w)
            pb = window_blocked_until(
                p, threshold, now, has_credits=s.has_credits, freshness=freshness
            )
            wb = window_blocked_until(
                w, threshold, now, has_credits=s.has_credits, freshness=freshness
            )
            p_blocks.append(pb)
            s_blocks.append(wb)
            if pb is None and wb is None:
                all_blocked = False
        out.append(
            {
                "limit_name": scope,
                "metered_feature": family,
                "rate_limit": {
                    "allowed": not all_blocked,
                    "limit_reached": all_blocked,
                    "primary_window": pool_window(primaries, p_blocks, PRIMARY_WINDOW_S, now),
                    "secondary_window": pool_window(secondaries, s_blocks, SECONDARY_WINDOW_S, now),
                },
            }
        )
    return out
