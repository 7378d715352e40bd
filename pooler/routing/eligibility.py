"""Hard eligibility: an account failing any check is never chosen (DESIGN §4). Pure.

Checks come in two parts. `account_block` does not depend on the request (lifecycle, the
account's own quota windows, capacity), so the router can keep its answer until the
account changes or the time it names passes. `request_block` depends on the request's
route class (its circuit) and model (model-scoped limits). Each answers `(code, until)`:
the exclusion code and when it may lift by itself (None: only a state change lifts it).
"""

from __future__ import annotations

from pooler.routing.circuit import RESPONSES
from pooler.routing.snapshot import AccountSnapshot, WindowState

NOT_ACTIVE = "not_active"
ACTOR_DOWN = "actor_down"
USAGE_LIMIT_REACHED = "usage_limit_reached"
QUOTA_EXHAUSTED = "quota_exhausted"
QUOTA_WEEKLY_EXHAUSTED = "quota_weekly_exhausted"
QUOTA_MODEL_EXHAUSTED = "quota_model_exhausted"
RATE_LIMITED = "rate_limited"
AT_CAPACITY = "at_capacity"
CIRCUIT_OPEN = "circuit_open"
CIRCUIT_PROBE_IN_FLIGHT = "circuit_probe_in_flight"
EXCLUDED = "already_tried"
MODEL_NOT_SUPPORTED = "model_not_supported"

QUOTA_CODES = frozenset(
    {USAGE_LIMIT_REACHED, QUOTA_EXHAUSTED, QUOTA_WEEKLY_EXHAUSTED, QUOTA_MODEL_EXHAUSTED}
)
# Evidence without a reset time blocks until it is this old, then the account may probe.
DEFAULT_FRESHNESS_S = 900.0

Block = tuple[str, float | None]


def window_blocked_until(
    window: WindowState | None,
    threshold: float,
    now: float,
    *,
    has_credits: bool = False,
    freshness: float = DEFAULT_FRESHNESS_S,
) -> float | None:
    """When a window at or over the threshold is usable again; None if it is usable now.

    A window past its reset time is usable (the evidence predates the reset). Credits carry
    an account past an exhausted window, but not past an operator's lower threshold."""
    if window is None or window.used_percent < threshold:
        return None
    if has_credits and threshold >= 100.0:
        return None
    if window.reset_at is not None:
        return window.reset_at if window.reset_at > now else None
    seen = window.observed_at if window.observed_at is not None else now
    until = seen + freshness
    return until if until > now else None


def account_block(
    snapshot: AccountSnapshot, threshold: float, now: float, freshness: float = DEFAULT_FRESHNESS_S
) -> Block | None:
    if not snapshot.alive:
        return ACTOR_DOWN, None
    if snapshot.lifecycle != "active":
        return NOT_ACTIVE, None
    quota = quota_block(snapshot, threshold, now, freshness)
    if quota is not None:
        return quota
    if snapshot.cooling_until is not None and snapshot.cooling_until > now:
        return RATE_LIMITED, snapshot.cooling_until
    if snapshot.in_flight >= snapshot.max_in_flight:
        return AT_CAPACITY, None
    return None


def quota_block(
    snapshot: AccountSnapshot, threshold: float, now: float, freshness: float = DEFAULT_FRESHNESS_S
) -> Block | None:
    """The account's own quota (not model-scoped): the block that lasts longest."""
    primary, secondary = snapshot.primary, snapshot.secondary
    if (
        snapshot.blocked_until is None
        and (primary is None or primary.used_percent < threshold)
        and (secondary is None or secondary.used_percent < threshold)
    ):
        return None  # the common case, on every touch of the router
    block: Block | None = None
    if snapshot.blocked_until is not None and snapshot.blocked_until > now:
        block = (USAGE_LIMIT_REACHED, snapshot.blocked_until)
    for code, window in (
        (QUOTA_EXHAUSTED, snapshot.primary),
        (QUOTA_WEEKLY_EXHAUSTED, snapshot.secondary),
    ):
        until = window_blocked_until(
            window, threshold, now, has_credits=snapshot.has_credits, freshness=freshness
        )
        if until is not None and (block is None or until > (block[1] or 0.0)):
            block = (code, until)
    return block


def request_block(
    snapshot: AccountSnapshot,
    route_class: str,
    model_scope: str,
    threshold: float,
    now: float,
    freshness: float = DEFAULT_FRESHNESS_S,
) -> Block | None:
    circuit = snapshot.circuits.get(route_class)
    if circuit is not None:
        if circuit.open_until > now:
            return CIRCUIT_OPEN, circuit.open_until
        if circuit.probing:
            return CIRCUIT_PROBE_IN_FLIGHT, None
    models = snapshot.models
    if models is not None and model_scope and model_scope not in models:
        return MODEL_NOT_SUPPORTED, None
    for limit in snapshot.scoped:
        if limit.scope != model_scope:
            continue
        for window in (limit.primary, limit.secondary):
            until = window_blocked_until(
                window, threshold, now, has_credits=snapshot.has_credits, freshness=freshness
            )
            if until is not None:
                return QUOTA_MODEL_EXHAUSTED, until
    return None


def exclusion(
    snapshot: AccountSnapshot,
    threshold: float,
    now: float,
    *,
    route_class: str = RESPONSES,
    model_scope: str = "",
    freshness: float = DEFAULT_FRESHNESS_S,
) -> str | None:
    """Every check at once: the exclusion code, or None when the account is eligible."""
    block = account_block(snapshot, threshold, now, freshness) or request_block(
        snapshot, route_class, model_scope, threshold, now, freshness
    )
    return block[0] if block is not None else None
