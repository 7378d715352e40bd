"""Folding quota evidence (headers, stream events, error bodies, the usage API) into an
account's snapshot. Pure: latest observation wins per (family, window).

Extra limit families become `ScopedLimit`s: their display name (often a model name, e.g.
`GPT-5.3-Codex-Spark`) or, without one, their family id is the scope they apply to.
"""

from __future__ import annotations

from dataclasses import replace

from pooler.protocol.ratelimit import RateLimitSnapshot, ReportedWindow
from pooler.routing.snapshot import AccountSnapshot, ScopedLimit, WindowState, normalize_scope

WEEKLY_MINUTES = 10_080


def window_state(window: ReportedWindow | None, observed_at: float) -> WindowState | None:
    if window is None:
        return None
    return WindowState(window.used_percent, window.reset_at, observed_at)


def _pair(
    primary: ReportedWindow | None, secondary: ReportedWindow | None
) -> tuple[ReportedWindow | None, ReportedWindow | None]:
    """A weekly window reported in the primary slot is the secondary one (inventory §4)."""
    if primary is not None and secondary is None and primary.window_minutes == WEEKLY_MINUTES:
        return None, primary
    return primary, secondary


def _newer(current: WindowState | None, observed_at: float) -> bool:
    """Evidence older than what is known (another node's, arriving late) is ignored."""
    return current is None or current.observed_at is None or current.observed_at <= observed_at


def apply_evidence(
    snapshot: AccountSnapshot, evidence: RateLimitSnapshot, observed_at: float
) -> AccountSnapshot:
    changes = evidence_changes(snapshot, evidence, observed_at)
    return replace(snapshot, **changes) if changes else snapshot  # type: ignore[arg-type]


def evidence_changes(
    snapshot: AccountSnapshot, evidence: RateLimitSnapshot, observed_at: float
) -> dict[str, object]:
    """The snapshot fields the evidence changes (for one `replace` with other changes)."""
    primary, secondary = _pair(evidence.primary, evidence.secondary)
    changes: dict[str, object] = {}
    if primary is not None and _newer(snapshot.primary, observed_at):
        changes["primary"] = window_state(primary, observed_at)
    if secondary is not None and _newer(snapshot.secondary, observed_at):
        changes["secondary"] = window_state(secondary, observed_at)
    if evidence.plan_type:
        changes["plan_type"] = evidence.plan_type
    if evidence.credits is not None:
        changes["has_credits"] = evidence.credits.has_credits or evidence.credits.unlimited
    if evidence.extra:
        scoped = {limit.family: limit for limit in snapshot.scoped}
        for family, (raw_primary, raw_secondary) in evidence.extra.items():
            p, s = _pair(raw_primary, raw_secondary)
            name = evidence.limit_names.get(family) or family
            old = scoped.get(family)
            scoped[family] = ScopedLimit(
                family,
                normalize_scope(name),
                window_state(p, observed_at) or (old.primary if old else None),
                window_state(s, observed_at) or (old.secondary if old else None),
            )
        changes["scoped"] = tuple(scoped.values())
    return changes


def usage_limit_evidence(snapshot: AccountSnapshot, resets_at: float) -> RateLimitSnapshot:
    """What a `usage_limit_reached` answer without quota headers says, as evidence another
    node can apply: a window is full until `resets_at`. Which one is a guess: the known
    window whose reset is nearest that time, the primary when neither has one."""

    def gap(window: WindowState | None) -> float:
        if window is None or window.reset_at is None:
            return float("inf")
        return abs(window.reset_at - resets_at)

    full = ReportedWindow(100.0, None, resets_at)
    if gap(snapshot.secondary) < gap(snapshot.primary):
        return RateLimitSnapshot(None, full, None, {}, None, None)
    return RateLimitSnapshot(full, None, None, {}, None, None)


def reports_windows(evidence: RateLimitSnapshot | None) -> bool:
    """The evidence reports the account's own primary or secondary window."""
    return evidence is not None and (evidence.primary is not None or evidence.secondary is not None)
