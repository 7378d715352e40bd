"""Choosing accounts for one lease: eligibility, continuity, strategy. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pooler.routing.continuity import ContinuityMap
from pooler.routing.eligibility import EXCLUDED, QUOTA_EXHAUSTED, exclusion, quota_blocked_until
from pooler.routing.snapshot import AccountSnapshot
from pooler.routing.strategies import ChoiceHistory, order_candidates


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    pool_id: str
    strategy: str = "least_used"
    quota_threshold_percent: float = 100.0
    retry_budget: int = 3
    weights: Mapping[str, int] = field(default_factory=dict)  # account id -> weight


@dataclass(slots=True)
class Choice:
    """Accounts to try in order, and why the others were left out."""

    candidates: list[AccountSnapshot]
    exclusions: dict[str, str] = field(default_factory=dict)
    pinned_account: str | None = None
    earliest_reset: float | None = None

    @property
    def all_quota_exhausted(self) -> bool:
        return (
            not self.candidates
            and bool(self.exclusions)
            and all(code == QUOTA_EXHAUSTED for code in self.exclusions.values())
        )


def choose_accounts(
    policy: PoolPolicy,
    snapshots: Sequence[AccountSnapshot],
    *,
    continuity: ContinuityMap,
    continuity_keys: Iterable[bytes],
    exclude: frozenset[str],
    history: ChoiceHistory,
    now: float,
) -> Choice:
    eligible: list[AccountSnapshot] = []
    exclusions: dict[str, str] = {}
    earliest: float | None = None
    for snapshot in snapshots:
        if snapshot.account_id in exclude:
            exclusions[snapshot.label] = EXCLUDED
            continue
        code = exclusion(snapshot, policy.quota_threshold_percent, now)
        if code is None:
            eligible.append(snapshot)
            continue
        exclusions[snapshot.label] = code
        if code == QUOTA_EXHAUSTED:
            until = quota_blocked_until(snapshot, policy.quota_threshold_percent, now)
            if until is not None and (earliest is None or until < earliest):
                earliest = until
    ordered = order_candidates(policy.strategy, eligible, history, policy.weights)
    pinned: str | None = None
    for key in continuity_keys:
        account_id = continuity.get(key, now)
        if account_id is None:
            continue
        for index, snapshot in enumerate(ordered):
            if snapshot.account_id == account_id:
                ordered.insert(0, ordered.pop(index))
                pinned = account_id
                break
        break  # only the strongest key present decides; a stale pin just moves on
    return Choice(ordered, exclusions, pinned, earliest)
