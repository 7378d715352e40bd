"""Ordering eligible accounts (DESIGN §4). Pure functions over snapshots.

`least_used`: most remaining quota first (lowest max used percent across windows), then
fewest requests in flight, then the one chosen longest ago, so equal accounts take turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pooler.routing.snapshot import AccountSnapshot


def order_least_used(
    candidates: Sequence[AccountSnapshot], last_chosen: Mapping[str, int]
) -> list[AccountSnapshot]:
    return sorted(
        candidates,
        key=lambda s: (
            round(s.max_used_percent, 1),
            s.in_flight,
            last_chosen.get(s.account_id, -1),
            s.account_id,
        ),
    )


def order_round_robin(
    candidates: Sequence[AccountSnapshot], last_chosen: Mapping[str, int]
) -> list[AccountSnapshot]:
    return sorted(candidates, key=lambda s: (last_chosen.get(s.account_id, -1), s.account_id))


def order_fill_first(
    candidates: Sequence[AccountSnapshot], last_chosen: Mapping[str, int]
) -> list[AccountSnapshot]:
    """Drain the most used account first (stable by id), so others keep their quota."""
    return sorted(candidates, key=lambda s: (-s.max_used_percent, s.account_id))


STRATEGIES = {
    "least_used": order_least_used,
    "round_robin": order_round_robin,
    "fill_first": order_fill_first,
}


def order_candidates(
    strategy: str, candidates: Sequence[AccountSnapshot], last_chosen: Mapping[str, int]
) -> list[AccountSnapshot]:
    return STRATEGIES.get(strategy, order_least_used)(candidates, last_chosen)
