"""Why an account is not taking traffic now, in plain words. Pure.

The console's account page asks the same questions as the router (`eligibility`), with the
same exclusion codes, but collects every reason instead of stopping at the first: an
account can be paused *and* over its weekly quota, and the operator should see both.
`usable_now(reasons)` agrees with `eligibility.exclusion` for a Responses request that
names no model-scoped limit (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from pooler.routing.circuit import COMPACT, CONTROL, RESPONSES
from pooler.routing.eligibility import (
    ACTOR_DOWN,
    AT_CAPACITY,
    CIRCUIT_OPEN,
    CIRCUIT_PROBE_IN_FLIGHT,
    DEFAULT_FRESHNESS_S,
    NOT_ACTIVE,
    QUOTA_EXHAUSTED,
    QUOTA_MODEL_EXHAUSTED,
    QUOTA_WEEKLY_EXHAUSTED,
    RATE_LIMITED,
    USAGE_LIMIT_REACHED,
    window_blocked_until,
)
from pooler.routing.snapshot import AccountSnapshot

# Not a router exclusion: the gateway runs no actor for the account (no active assignment
# to an active Pool), so the router never sees it.
NOT_RUNNING: Final = "not_running"
ROUTE_CLASSES: Final = (RESPONSES, COMPACT, CONTROL)
# `Reason.applies_to` for a reason that keeps every request away.
ALL: Final = "all"


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason: the router's exclusion code, the words, when it lifts by itself (None:
    only a change of state lifts it) and what it keeps away: `ALL`, a route class, or
    `model NAME` (requests for that model only)."""

    code: str
    text: str
    until: float | None = None
    applies_to: str = ALL


@dataclass(frozen=True, slots=True)
class PauseInfo:
    """Who paused the account and when (from the audit trail), and the reason they gave."""

    actor: str | None = None
    at: float | None = None


def when(moment: float) -> str:
    """A time as the console shows it: `2026-12-06 03:10 UTC`."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _lifecycle_reason(lifecycle: str, reason: str | None, pause: PauseInfo | None) -> Reason:
    why = f": {reason}" if reason else ""
    if lifecycle == "paused":
        who = f" by {pause.actor}" if pause and pause.actor else ""
        at = f" at {when(pause.at)}" if pause and pause.at is not None else ""
        return Reason(NOT_ACTIVE, f"paused{who}{at}{why}")
    if lifecycle == "reauth_required":
        return Reason(
            NOT_ACTIVE,
            f"needs a new sign-in (reauth required){why}: re-link it or upload a fresh auth.json",
        )
    if lifecycle == "disabled":
        return Reason(NOT_ACTIVE, f"disabled{why}")
    return Reason(NOT_ACTIVE, f"lifecycle is {lifecycle}{why}")


def why_not_serving(
    snapshot: AccountSnapshot | None,
    now: float,
    *,
    threshold: float = 100.0,
    freshness: float = DEFAULT_FRESHNESS_S,
    lifecycle_reason: str | None = None,
    pause: PauseInfo | None = None,
) -> list[Reason]:
    """Every reason the router would keep requests away from the account at `now` (empty:
    it takes traffic). `snapshot` None: no actor runs for it on this gateway."""
    if snapshot is None:
        return [
            Reason(
                NOT_RUNNING,
                "not running on this gateway: it is in no active Pool (or its Pool is"
                " being loaded)",
            )
        ]
    reasons: list[Reason] = []
    if not snapshot.alive:
        reasons.append(Reason(ACTOR_DOWN, "its account actor is restarting after a crash"))
    if snapshot.lifecycle != "active":
        reasons.append(_lifecycle_reason(snapshot.lifecycle, lifecycle_reason, pause))
    if snapshot.blocked_until is not None and snapshot.blocked_until > now:
        reasons.append(
            Reason(
                USAGE_LIMIT_REACHED,
                f'the upstream answered "usage limit reached"; blocked until'
                f" {when(snapshot.blocked_until)}",
                snapshot.blocked_until,
            )
        )
    for code, name, window in (
        (QUOTA_EXHAUSTED, "primary (short) quota window", snapshot.primary),
        (QUOTA_WEEKLY_EXHAUSTED, "secondary (weekly) quota window", snapshot.secondary),
    ):
        until = window_blocked_until(
            window, threshold, now, has_credits=snapshot.has_credits, freshness=freshness
        )
        if until is not None and window is not None:
            reasons.append(
                Reason(
                    code,
                    f"{name} at {window.used_percent:g} % (the Pool's limit is"
                    f" {threshold:g} %) until {when(until)}",
                    until,
                )
            )
    if snapshot.cooling_until is not None and snapshot.cooling_until > now:
        reasons.append(
            Reason(
                RATE_LIMITED,
                f"rate limited by the upstream until {when(snapshot.cooling_until)}",
                snapshot.cooling_until,
            )
        )
    if snapshot.in_flight >= snapshot.max_in_flight:
        reasons.append(
            Reason(
                AT_CAPACITY,
                f"at capacity: {snapshot.in_flight} of {snapshot.max_in_flight} requests in flight",
            )
        )
    for route_class in _route_classes(snapshot):
        circuit = snapshot.circuits[route_class]
        if circuit.open_until > now:
            reasons.append(
                Reason(
                    CIRCUIT_OPEN,
                    f"circuit open for {route_class} until {when(circuit.open_until)}",
                    circuit.open_until,
                    route_class,
                )
            )
        elif circuit.probing:
            reasons.append(
                Reason(
                    CIRCUIT_PROBE_IN_FLIGHT,
                    f"circuit half-open for {route_class}: a probe request is in flight",
                    None,
                    route_class,
                )
            )
    for limit in snapshot.scoped:
        blocked = [
            until
            for window in (limit.primary, limit.secondary)
            if (
                until := window_blocked_until(
                    window, threshold, now, has_credits=snapshot.has_credits, freshness=freshness
                )
            )
            is not None
        ]
        if blocked:
            until = max(blocked)
            reasons.append(
                Reason(
                    QUOTA_MODEL_EXHAUSTED,
                    f"the quota of {limit.scope} is exhausted until {when(until)} (only"
                    " requests for that model wait)",
                    until,
                    f"model {limit.scope}",
                )
            )
    return reasons


def _route_classes(snapshot: AccountSnapshot) -> list[str]:
    known = [c for c in ROUTE_CLASSES if c in snapshot.circuits]
    return known + sorted(c for c in snapshot.circuits if c not in ROUTE_CLASSES)


def usable_now(reasons: Sequence[Reason]) -> bool:
    """Would the router give this account a Responses request (no model-scoped limit)?"""
    return not any(r.applies_to in (ALL, RESPONSES) for r in reasons)
