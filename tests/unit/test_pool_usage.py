"""The Pool's usage payload (`/wham/usage`): aggregation over the Pool's accounts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pooler.routing.pool_usage import (
    PRIMARY_WINDOW_S,
    SECONDARY_WINDOW_S,
    UNKNOWN_PLAN,
    pool_usage,
    usable_count,
)
from pooler.routing.snapshot import AccountSnapshot, ScopedLimit, WindowState

NOW = 1_800_000_000.0


def account(
    name: str,
    primary: float | None = None,
    secondary: float | None = None,
    *,
    primary_reset: float = NOW + 3600,
    secondary_reset: float = NOW + 86_400,
    plan: str | None = "plus",
    **extra: object,
) -> AccountSnapshot:
    return AccountSnapshot(
        account_id=name,
        label=name,
        plan_type=plan,
        primary=None if primary is None else WindowState(primary, primary_reset, NOW - 1),
        secondary=None if secondary is None else WindowState(secondary, secondary_reset, NOW - 1),
        **extra,  # type: ignore[arg-type]
    )


def test_mean_over_active_accounts_and_no_evidence_counts_as_zero() -> None:
    payload = pool_usage([account("a", 60, 30), account("b", 20), account("c")], NOW)
    limits = payload["rate_limit"]
    assert limits["primary_window"]["used_percent"] == round(80 / 3)
    assert limits["secondary_window"]["used_percent"] == 10
    assert limits["allowed"] is True and limits["limit_reached"] is False
    assert limits["primary_window"]["limit_window_seconds"] == PRIMARY_WINDOW_S
    assert limits["secondary_window"]["limit_window_seconds"] == SECONDARY_WINDOW_S
    # Nothing blocked: the earliest reset of the window.
    assert limits["primary_window"]["reset_at"] == NOW + 3600
    assert limits["primary_window"]["reset_after_seconds"] == 3600


def test_exact_field_names() -> None:
    payload = pool_usage([account("a", 10, 5)], NOW)
    assert set(payload) == {"plan_type", "rate_limit", "credits", "additional_rate_limits"}
    assert set(payload["rate_limit"]) == {
        "allowed",
        "limit_reached",
        "primary_window",
        "secondary_window",
    }
    assert set(payload["rate_limit"]["primary_window"]) == {
        "used_percent",
        "limit_window_seconds",
        "reset_after_seconds",
        "reset_at",
    }
    assert set(payload["credits"]) == {"has_credits", "unlimited", "balance"}


def test_paused_and_dead_accounts_do_not_count() -> None:
    payload = pool_usage(
        [account("a", 40), account("b", 100, lifecycle="paused"), account("c", 100, alive=False)],
        NOW,
    )
    assert payload["rate_limit"]["primary_window"]["used_percent"] == 40


def test_limit_reached_only_when_no_account_can_serve() -> None:
    one_left = pool_usage([account("a", 100, primary_reset=NOW + 100), account("b", 10)], NOW)
    assert one_left["rate_limit"]["limit_reached"] is False
    assert one_left["rate_limit"]["primary_window"]["used_percent"] == 55
    # The earliest reset among the blocked accounts.
    assert one_left["rate_limit"]["primary_window"]["reset_at"] == NOW + 100

    all_out = pool_usage(
        [
            account("a", 100, primary_reset=NOW + 500),
            account("b", 100, primary_reset=NOW + 200),
            account("c", 20, 100, secondary_reset=NOW + 9000),
        ],
        NOW,
    )
    limits = all_out["rate_limit"]
    assert limits["limit_reached"] is True and limits["allowed"] is False
    assert limits["primary_window"]["reset_at"] == NOW + 200
    assert limits["secondary_window"]["reset_at"] == NOW + 9000


def test_usage_limit_answer_blocks_like_an_exhausted_window() -> None:
    payload = pool_usage([account("a", blocked_until=NOW + 42)], NOW)
    assert payload["rate_limit"]["limit_reached"] is True
    assert payload["rate_limit"]["primary_window"]["reset_at"] == NOW + 42


def test_credits_carry_an_exhausted_account() -> None:
    payload = pool_usage([account("a", 100, has_credits=True)], NOW)
    assert payload["rate_limit"]["limit_reached"] is False
    assert payload["credits"]["has_credits"] is True


def test_a_window_past_its_reset_counts_as_unused() -> None:
    payload = pool_usage([account("a", 90, primary_reset=NOW - 1)], NOW)
    window = payload["rate_limit"]["primary_window"]
    assert window["used_percent"] == 0
    assert window["reset_at"] == NOW + PRIMARY_WINDOW_S


def test_plan_type_is_the_most_common() -> None:
    accounts = [account("a", plan="pro"), account("b", plan="plus"), account("c", plan="plus")]
    assert pool_usage(accounts, NOW)["plan_type"] == "plus"
    assert pool_usage([account("a", plan=None)], NOW)["plan_type"] == UNKNOWN_PLAN


def test_empty_pool_cannot_serve() -> None:
    payload = pool_usage([], NOW)
    assert payload["rate_limit"]["limit_reached"] is True
    assert payload["rate_limit"]["primary_window"] is None


def test_scoped_limits_become_additional_rate_limits() -> None:
    spark = ScopedLimit("codex_bengalfox", "gpt5.3codexspark", WindowState(80, NOW + 60, NOW))
    payload = pool_usage([account("a", 10, scoped=(spark,)), account("b", 10)], NOW)
    (extra,) = payload["additional_rate_limits"]
    assert extra["metered_feature"] == "codex_bengalfox"
    assert extra["rate_limit"]["primary_window"]["used_percent"] == 40
    assert extra["rate_limit"]["limit_reached"] is False


percent = st.floats(min_value=0, max_value=150, allow_nan=False)
members = st.lists(
    st.tuples(st.none() | percent, st.none() | percent, st.integers(-100, 10_000)),
    max_size=8,
)


@given(members)
def test_aggregate_is_bounded_and_consistent(
    raw: list[tuple[float | None, float | None, int]],
) -> None:
    accounts = [
        account(f"a{i}", p, s, primary_reset=NOW + r, secondary_reset=NOW + 2 * r)
        for i, (p, s, r) in enumerate(raw)
    ]
    payload = pool_usage(accounts, NOW)
    limits = payload["rate_limit"]
    assert limits["allowed"] is not limits["limit_reached"]
    if not accounts:
        assert limits["limit_reached"]
        return
    for name in ("primary_window", "secondary_window"):
        window = limits[name]
        assert 0 <= window["used_percent"] <= 100
        assert window["reset_at"] > NOW - 1
        assert window["reset_after_seconds"] >= 0
    # Every account exhausted (and not yet reset) <=> the Pool's limit is reached.
    exhausted = all(
        (p is not None and p >= 100 and r > 0) or (s is not None and s >= 100 and r > 0)
        for p, s, r in raw
    )
    assert limits["limit_reached"] == exhausted


def test_usable_counts_what_the_router_would_lease_now() -> None:
    members = [
        account("ok", 10, 5),
        account("paused", lifecycle="paused"),
        account("down", alive=False),
        account("over threshold", 95),
        account("cooling", cooling_until=NOW + 30),
        account("busy", in_flight=2, max_in_flight=2),
        account("cooled", cooling_until=NOW - 1),
    ]
    assert usable_count(members, NOW) == 3  # ok, over threshold (100 %), cooled
    assert usable_count(members, NOW, threshold=90) == 2
    assert usable_count([], NOW) == 0
