"""Routing is pure: eligibility, strategies, continuity, choice. Property-tested."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from pooler.routing.choose import PoolPolicy, choose_accounts
from pooler.routing.continuity import ContinuityMap
from pooler.routing.eligibility import (
    AT_CAPACITY,
    COOLING_DOWN,
    NOT_ACTIVE,
    QUOTA_EXHAUSTED,
    exclusion,
    quota_blocked_until,
)
from pooler.routing.snapshot import AccountSnapshot, WindowState
from pooler.routing.strategies import ChoiceHistory, order_candidates

NOW = 1_800_000_000.0

windows = st.none() | st.builds(
    WindowState,
    used_percent=st.floats(0, 120),
    reset_at=st.none() | st.floats(NOW - 3600, NOW + 3600),
)
snapshots = st.builds(
    AccountSnapshot,
    account_id=st.text("abcdef", min_size=1, max_size=4),
    label=st.just("x"),
    lifecycle=st.sampled_from(["active", "paused", "reauth_required"]),
    in_flight=st.integers(0, 40),
    max_in_flight=st.integers(1, 40),
    primary=windows,
    secondary=windows,
    blocked_until=st.none() | st.floats(NOW - 100, NOW + 100),
    cooling_until=st.none() | st.floats(NOW - 100, NOW + 100),
)


def account(name: str, **changes: object) -> AccountSnapshot:
    return AccountSnapshot(account_id=name, label=name, **changes)  # type: ignore[arg-type]


@given(snapshots)
def test_an_eligible_account_passes_every_hard_check(snapshot: AccountSnapshot) -> None:
    if exclusion(snapshot, 100.0, NOW) is None:
        assert snapshot.lifecycle == "active"
        assert snapshot.in_flight < snapshot.max_in_flight
        assert quota_blocked_until(snapshot, 100.0, NOW) is None
        assert snapshot.cooling_until is None or snapshot.cooling_until <= NOW
        for window in (snapshot.primary, snapshot.secondary):
            assert (
                window is None
                or window.used_percent < 100
                or (window.reset_at is not None and window.reset_at <= NOW)
            )


def test_exclusion_codes() -> None:
    assert exclusion(account("a", lifecycle="paused"), 100, NOW) == NOT_ACTIVE
    assert exclusion(account("a", in_flight=2, max_in_flight=2), 100, NOW) == AT_CAPACITY
    assert exclusion(account("a", cooling_until=NOW + 5), 100, NOW) == COOLING_DOWN
    full = account("a", primary=WindowState(100.0, NOW + 60))
    assert exclusion(full, 100, NOW) == QUOTA_EXHAUSTED
    assert exclusion(full, 100, NOW + 61) is None  # the window has reset since
    assert (
        exclusion(account("a", secondary=WindowState(95.0, NOW + 60)), 90, NOW) == QUOTA_EXHAUSTED
    )


@given(
    st.lists(snapshots, max_size=12, unique_by=lambda s: s.account_id),
    st.sampled_from(["least_used", "round_robin", "fill_first", "weighted"]),
)
def test_choice_is_a_permutation_of_the_eligible(
    accounts: list[AccountSnapshot], strategy: str
) -> None:
    choice = choose_accounts(
        PoolPolicy("p", strategy),
        accounts,
        continuity=ContinuityMap(),
        continuity_keys=(),
        exclude=frozenset(),
        history=ChoiceHistory(),
        now=NOW,
    )
    eligible = {a.account_id for a in accounts if exclusion(a, 100.0, NOW) is None}
    assert {c.account_id for c in choice.candidates} == eligible
    assert len(choice.candidates) == len(eligible)
    assert set(choice.exclusions) <= {a.label for a in accounts}
    if (
        accounts
        and not eligible
        and all(exclusion(a, 100.0, NOW) == QUOTA_EXHAUSTED for a in accounts)
    ):
        assert choice.all_quota_exhausted and choice.earliest_reset is not None


def test_least_used_prefers_remaining_quota_then_takes_turns() -> None:
    history = ChoiceHistory()
    busy = account("a", primary=WindowState(50.0, NOW + 60))
    fresh = [account("b"), account("c")]
    order = order_candidates("least_used", [busy, *fresh], history, {})
    assert order[-1].account_id == "a"
    picks = []
    for _ in range(4):
        first = order_candidates("least_used", fresh, history, {})[0].account_id
        history.record(first)
        picks.append(first)
    assert picks == ["b", "c", "b", "c"]


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 5), min_size=1))
def test_weighted_serves_in_proportion_to_weights(weights: dict[str, int]) -> None:
    history = ChoiceHistory()
    accounts = [account(name) for name in weights]
    rounds = 12 * sum(weights.values())
    for _ in range(rounds):
        history.record(order_candidates("weighted", accounts, history, weights)[0].account_id)
    served = Counter(history.counts)
    for name, weight in weights.items():
        expected = rounds * weight / sum(weights.values())
        assert abs(served[name] - expected) <= 1


def test_continuity_pins_the_strongest_key_while_eligible() -> None:
    cmap = ContinuityMap(ttl=60)
    cmap.pin(b"k", "c", NOW)
    policy = PoolPolicy("p")
    accounts = [account("a"), account("b"), account("c", primary=WindowState(40.0, None))]
    args = {"continuity": cmap, "exclude": frozenset(), "history": ChoiceHistory(), "now": NOW}
    choice = choose_accounts(policy, accounts, continuity_keys=(b"k",), **args)  # type: ignore[arg-type]
    assert choice.candidates[0].account_id == "c" and choice.pinned_account == "c"
    # A soft pin to an ineligible account just moves on.
    accounts[2] = account("c", lifecycle="paused")
    choice = choose_accounts(policy, accounts, continuity_keys=(b"k",), **args)  # type: ignore[arg-type]
    assert choice.pinned_account is None and choice.candidates[0].account_id == "a"
    # Pins expire.
    assert cmap.get(b"k", NOW + 61) is None


@given(st.lists(st.tuples(st.binary(max_size=3), st.sampled_from("abc")), max_size=40))
def test_continuity_map_is_bounded_and_keeps_the_latest(pins: list[tuple[bytes, str]]) -> None:
    cmap = ContinuityMap(ttl=60, max_entries=5)
    for key, account_id in pins:
        cmap.pin(key, account_id, NOW)
    assert len(cmap) <= 5
    if pins:
        key, account_id = pins[-1]
        assert cmap.get(key, NOW) == account_id
