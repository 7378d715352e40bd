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
from typing import Any

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


SortKey = tuple[Any, ...]
KeyFunction = Callable[[AccountSnapshot, ChoiceHistory, Mapping[str, int], int], SortKey]


def key_least_used(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    used = round(s.max_used_percent, 1)
    return (demoted, used, s.in_flight, history.last_chosen.get(s.account_id, -1))


def key_round_robin(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    return (demoted, history.last_chosen.get(s.account_id, -1))


def key_fill_first(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    return (demoted, -round(s.max_used_percent, 1))


def key_weighted(
    s: AccountSnapshot, history: ChoiceHistory, weights: Mapping[str, int], demoted: int
) -> SortKey:
    weight = max(1, weights.get(s.account_id, 1))
    share = history.counts.get(s.account_id, 0) / weight
    return (demoted, share, history.last_chosen.get(s.account_id, -1))


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
        key=lambda s: (*sort_key(strategy, s, history, weights, now), s.account_id),
    )
