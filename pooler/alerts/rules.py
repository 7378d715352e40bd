"""The alert rule kinds, and the pure evaluation of a Pool's state against a rule: the
findings (one per subject the condition holds for). An incident is open exactly while its
(rule, subject) has a finding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

USABLE_BELOW: Final = "usable_below"
REAUTH_REQUIRED: Final = "reauth_required"
QUOTA_ABOVE: Final = "quota_above"
ERROR_RATE_ABOVE: Final = "error_rate_above"
KINDS: Final = (USABLE_BELOW, REAUTH_REQUIRED, QUOTA_ABOVE, ERROR_RATE_ABOVE)
# What the threshold means, per kind (None: the kind takes none); and its bounds.
THRESHOLDS: Final[dict[str, tuple[str, float, float] | None]] = {
    USABLE_BELOW: ("accounts", 1, 10_000),
    REAUTH_REQUIRED: None,
    QUOTA_ABOVE: ("percent", 1, 100),
    ERROR_RATE_ABOVE: ("percent", 0.1, 100),
}
WINDOW_NAMES: Final = {"primary": "short window", "secondary": "weekly window"}


@dataclass(frozen=True, slots=True)
class Rule:
    id: UUID
    pool_id: UUID
    kind: str
    threshold: float | None
    min_requests: int = 10

    def describe(self) -> str:
        if self.kind == USABLE_BELOW:
            return f"usable accounts below {self.threshold:g}"
        if self.kind == REAUTH_REQUIRED:
            return "an account needs a new login"
        if self.kind == QUOTA_ABOVE:
            return f"a quota window at or above {self.threshold:g} %"
        return (
            f"error rate at or above {self.threshold:g} % over 5 minutes"
            f" (at least {self.min_requests} requests)"
        )


@dataclass(frozen=True, slots=True)
class WindowUse:
    """A quota window across the Pool's active accounts (as `/wham/usage` reports it)."""

    used_percent: float
    reset_at: float | None


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the rules look at for one Pool, as of one evaluation."""

    pool_id: UUID
    pool_name: str
    accounts: int
    usable: int
    reauth: tuple[tuple[UUID, str], ...] = ()  # (account id, label)
    windows: dict[str, WindowUse] = field(default_factory=dict)  # primary | secondary
    requests: int = 0  # over the last 5 minutes
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: UUID
    pool_id: UUID
    kind: str
    subject: str
    summary: str
    details: dict[str, Any]


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def evaluate(rule: Rule, state: PoolState) -> list[Finding]:
    """The findings of `rule` on `state` (empty: the condition does not hold)."""

    def found(subject: str, summary: str, **details: Any) -> Finding:
        return Finding(rule.id, rule.pool_id, rule.kind, subject, summary[:500], details)

    limit = rule.threshold
    if rule.kind == USABLE_BELOW and limit is not None and state.usable < limit:
        return [
            found(
                "pool",
                f"{state.usable} of {state.accounts} accounts usable (below {limit:g})",
                usable=state.usable,
                accounts=state.accounts,
                threshold=limit,
            )
        ]
    if rule.kind == REAUTH_REQUIRED:
        return [
            found(
                str(account_id),
                f"account {label} needs a new login",
                account_id=str(account_id),
                account_label=label,
            )
            for account_id, label in state.reauth
        ]
    if rule.kind == QUOTA_ABOVE and limit is not None:
        return [
            found(
                kind,
                f"{WINDOW_NAMES.get(kind, kind)} {use.used_percent:.0f} % used"
                f" (at or above {limit:g} %)",
                window=kind,
                used_percent=use.used_percent,
                threshold=limit,
                reset_at=_iso(use.reset_at),
            )
            for kind, use in sorted(state.windows.items())
            if use.used_percent >= limit
        ]
    if rule.kind == ERROR_RATE_ABOVE and limit is not None:
        if state.requests < rule.min_requests:
            return []
        rate = 100.0 * state.errors / state.requests
        if rate >= limit:
            return [
                found(
                    "pool",
                    f"{rate:.1f} % of {state.requests} requests failed over 5 minutes"
                    f" (at or above {limit:g} %)",
                    error_rate_percent=round(rate, 2),
                    requests=state.requests,
                    errors=state.errors,
                    threshold=limit,
                )
            ]
    return []


def evaluate_all(rules: Sequence[Rule], states: dict[UUID, PoolState]) -> list[Finding]:
    """Every rule whose Pool has a state (rules of Pools not evaluated yield nothing)."""
    return [f for r in rules if (s := states.get(r.pool_id)) is not None for f in evaluate(r, s)]
