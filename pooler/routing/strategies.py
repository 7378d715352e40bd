"""Ordering eligible accounts (DESIGN §4). Pure functions over snapshots.

- `least_used`: most remaining quota first (lowest max used percent across windows), then
  fewest requests in flight, then the one chosen longest ago, so equal accounts take turns.
- `round_robin`: the one chosen longest ago first.
- `fill_first`: the most used account first, so the others keep their quota.
- `weighted`: the account furthest below its share first: lowest choices / weight, so over
  time each account serves in proportion to its operator weight.
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


Strategy = Callable[
    [Sequence[AccountSnapshot], ChoiceHistory, Mapping[str, int]], list[AccountSnapshot]
]


def order_least_used(
    candidates: Sequence[AccountSnapshot], history: ChoiceHistory, weights: Mapping[str, int]
) -> list[AccountSnapshot]:
    last = history.last_chosen
    return sorted(
        candidates,
        key=lambda s: (
            round(s.max_used_percent, 1),
            s.in_flight,
            last.get(s.account_id, -1),
            s.account_id,
        ),
    )


def order_round_robin(
    candidates: Sequence[AccountSnapshot], history: ChoiceHistory, weights: Mapping[str, int]
) -> list[AccountSnapshot]:
    last = history.last_chosen
    return sorted(candidates, key=lambda s: (last.get(s.account_id, -1), s.account_id))


def order_fill_first(
    candidates: Sequence[AccountSnapshot], history: ChoiceHistory, weights: Mapping[str, int]
) -> list[AccountSnapshot]:
    return sorted(candidates, key=lambda s: (-s.max_used_percent, s.account_id))


def order_weighted(
    candidates: Sequence[AccountSnapshot], history: ChoiceHistory, weights: Mapping[str, int]
) -> list[AccountSnapshot]:
    counts, last = history.counts, history.last_chosen

    def share(s: AccountSnapshot) -> tuple[float, int, str]:
        weight = max(1, weights.get(s.account_id, 1))
        return (counts.get(s.account_id, 0) / weight, last.get(s.account_id, -1), s.account_id)

    return sorted(candidates, key=share)


STRATEGIES: dict[str, Strategy] = {
    "least_used": order_least_used,
    "round_robin": order_round_robin,
    "fill_first": order_fill_first,
    "weighted": order_weighted,
}


def order_candidates(
    strategy: str,
    candidates: Sequence[AccountSnapshot],
    history: ChoiceHistory,
    weights: Mapping[str, int],
) -> list[AccountSnapshot]:
    return STRATEGIES.get(strategy, order_least_used)(candidates, history, weights)
