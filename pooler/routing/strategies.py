"""Ordering eligible accounts (DESIGN §4): each strategy is a sort key. Pure.

- `least_used`: most remaining quota first (lowest max used percent across windows), then
  fewest requests in flight, then the one chosen longest ago, so equal accounts take turns.
- `round_robin`: the one chosen longest ago first.
- `fill_first`: the most used account first, so the others keep their quota.
- `weighted`: the account furthest below its share first: lowest choices / weight, so over
  time each account serves in proportion to its operator weight.

Every key starts with the demotion flag: an account that failed recently goes to the back
of the order without leaving it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pooler.routing.snapshot import AccountSnapshot


@dataclass(slots=True)
class ChoiceHistory:
    """Which accounts were chosen, and when (a logical clock), for the fair strategies."""

    last_chosen: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    clock: int = 0

    def record(self, account_id: str) -> None:
        self.clock += 1
        self.last_chosen[account_id] = self.clock
        self.counts[account_id] = self.counts.get(account_id, 0) + 1


# A key packs its fields into one integer, most significant first: the router keeps
# thousands of entries sorted, and one int compares much faster than a tuple of fields.
SortKey = int
KeyFunction = Callable[[AccountSnapshot, ChoiceHistory, Mapping[str, int], int], SortKey]

_DEMOTED_SHIFT = 160


def _used_tenths(s: AccountSnapshot) -> int:
    """Max used percent in tenths, 0..16383 (evidence is clamped to 1000 %). Written out
    rather than through `max_used_percent`: it runs on every change of every account."""
    primary, secondary = s.primary, s.secondary
    used = primary.used_percent if primary is not None else 0.0
    if secondary is not None and secondary.used_percent > used:
        used = secondary.used_percent
    tenths = int(used * 10.0 + 0.5)
    return tenths if 0 <= tenths <= 16_383 else (0 if tenths < 0 else 16_383)


def _last(history: ChoiceHistory, account_id: str) -> int:
    return history.last_chosen.get(account_id, -1) + 1  # never chosen: 0, first


def key_least_used(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    in_flight = s.in_flight if s.in_flight < 1 << 20 else (1 << 20) - 1
    last = history.last_chosen.get(s.account_id, -1) + 1
    return demoted << _DEMOTED_SHIFT | _used_tenths(s) << 84 | in_flight << 64 | last


def key_round_robin(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    return demoted << _DEMOTED_SHIFT | _last(history, s.account_id)


def key_fill_first(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    return demoted << _DEMOTED_SHIFT | (16_383 - _used_tenths(s))


def key_weighted(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    weight = max(1, weights.get(s.account_id, 1))
    # choices / weight, as a fraction with a common denominator so it packs exactly
    share = history.counts.get(s.account_id, 0) * (1_000_000 // min(weight, 1_000_000))
    return (
        demoted << _DEMOTED_SHIFT | min(share, (1 << 95) - 1) << 64 | _last(history, s.account_id)
    )


STRATEGIES: dict[str, KeyFunction] = {
    "least_used": key_least_used,
    "round_robin": key_round_robin,
    "fill_first": key_fill_first,
    "weighted": key_weighted,
}


def sort_key(
    strategy: str,
    snapshot: AccountSnapshot,
    history: ChoiceHistory,
    weights: Mapping[str, int],
    now: float,
) -> SortKey:
    demoted = 1 if snapshot.demoted_until is not None and snapshot.demoted_until > now else 0
    return STRATEGIES.get(strategy, key_least_used)(snapshot, history, weights, demoted)


def order_candidates(
    strategy: str,
    candidates: Sequence[AccountSnapshot],
    history: ChoiceHistory,
    weights: Mapping[str, int],
    now: float = 0.0,
) -> list[AccountSnapshot]:
    """The candidates in the strategy's order (ties broken by account id)."""
    return sorted(
        candidates,
        key=lambda s: (sort_key(strategy, s, history, weights, now), s.account_id),
    )
