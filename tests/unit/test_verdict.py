"""The console's "why is this account not taking traffic now": one reason per router
exclusion, in plain words, and the same yes/no as the router."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pooler.routing import eligibility as e
from pooler.routing.snapshot import AccountSnapshot, CircuitView, ScopedLimit, WindowState
from pooler.routing.verdict import (
    NOT_RUNNING,
    PauseInfo,
    usable_now,
    when,
    why_not_serving,
)

NOW = 1_800_000_000.0
LATER = NOW + 3600
BASE = AccountSnapshot("a1", "one")


def codes(snapshot: AccountSnapshot | None, **kwargs: object) -> list[str]:
    return [r.code for r in why_not_serving(snapshot, NOW, **kwargs)]  # type: ignore[arg-type]


def test_a_healthy_account_has_no_reason() -> None:
    assert why_not_serving(BASE, NOW) == []
    assert usable_now([])


def test_no_actor_means_not_running() -> None:
    (reason,) = why_not_serving(None, NOW)
    assert reason.code == NOT_RUNNING and "no active Pool" in reason.text


def test_paused_names_who_and_when() -> None:
    (reason,) = why_not_serving(
        replace(BASE, lifecycle="paused"),
        NOW,
        lifecycle_reason="maintenance",
        pause=PauseInfo("ops@example.com", NOW - 60),
    )
    assert reason.code == e.NOT_ACTIVE
    assert reason.text == f"paused by ops@example.com at {when(NOW - 60)}: maintenance"


def test_reauth_required_says_sign_in_again() -> None:
    (reason,) = why_not_serving(replace(BASE, lifecycle="reauth_required"), NOW)
    assert reason.code == e.NOT_ACTIVE and "new sign-in" in reason.text


def test_actor_down() -> None:
    assert codes(replace(BASE, alive=False)) == [e.ACTOR_DOWN]


def test_quota_windows_name_the_window_and_the_reset() -> None:
    snapshot = replace(
        BASE,
        primary=WindowState(100.0, LATER),
        secondary=WindowState(100.0, LATER + 60),
    )
    reasons = why_not_serving(snapshot, NOW)
    assert [r.code for r in reasons] == [e.QUOTA_EXHAUSTED, e.QUOTA_WEEKLY_EXHAUSTED]
    assert "primary" in reasons[0].text and when(LATER) in reasons[0].text
    assert "weekly" in reasons[1].text and reasons[1].until == LATER + 60


def test_the_pool_threshold_counts() -> None:
    snapshot = replace(BASE, primary=WindowState(85.0, LATER))
    assert codes(snapshot) == []
    assert codes(snapshot, threshold=80.0) == [e.QUOTA_EXHAUSTED]


def test_credits_carry_an_exhausted_window() -> None:
    assert codes(replace(BASE, primary=WindowState(100.0, LATER), has_credits=True)) == []


def test_a_window_past_its_reset_does_not_block() -> None:
    assert codes(replace(BASE, primary=WindowState(100.0, NOW - 1))) == []


def test_usage_limit_rate_limit_and_capacity() -> None:
    assert codes(replace(BASE, blocked_until=LATER)) == [e.USAGE_LIMIT_REACHED]
    (reason,) = why_not_serving(replace(BASE, cooling_until=LATER), NOW)
    assert reason.code == e.RATE_LIMITED and when(LATER) in reason.text
    (reason,) = why_not_serving(replace(BASE, in_flight=4, max_in_flight=4), NOW)
    assert reason.code == e.AT_CAPACITY and "4 of 4" in reason.text


def test_circuits_per_route_class() -> None:
    snapshot = replace(
        BASE,
        circuits={"compact": CircuitView(open_until=LATER), "responses": CircuitView(probing=True)},
    )
    reasons = why_not_serving(snapshot, NOW)
    assert [(r.code, r.applies_to) for r in reasons] == [
        (e.CIRCUIT_PROBE_IN_FLIGHT, "responses"),
        (e.CIRCUIT_OPEN, "compact"),
    ]
    assert reasons[1].text == f"circuit open for compact until {when(LATER)}"
    # A compact circuit alone leaves Responses requests flowing.
    assert usable_now(
        why_not_serving(replace(BASE, circuits={"compact": snapshot.circuits["compact"]}), NOW)
    )


def test_a_model_scoped_limit_keeps_only_that_model_away() -> None:
    limit = ScopedLimit("spark", "gpt5.3codexspark", primary=WindowState(100.0, LATER))
    reasons = why_not_serving(replace(BASE, scoped=(limit,)), NOW)
    assert [(r.code, r.applies_to) for r in reasons] == [
        (e.QUOTA_MODEL_EXHAUSTED, "model gpt5.3codexspark")
    ]
    assert usable_now(reasons)


def test_every_reason_is_listed_not_only_the_first() -> None:
    snapshot = replace(
        BASE, lifecycle="paused", secondary=WindowState(100.0, LATER), cooling_until=LATER
    )
    assert codes(snapshot) == [e.NOT_ACTIVE, e.QUOTA_WEEKLY_EXHAUSTED, e.RATE_LIMITED]


CASES = [
    BASE,
    replace(BASE, alive=False),
    replace(BASE, lifecycle="paused"),
    replace(BASE, lifecycle="disabled"),
    replace(BASE, primary=WindowState(99.0, LATER)),
    replace(BASE, primary=WindowState(100.0, LATER)),
    replace(BASE, primary=WindowState(100.0, None, NOW - 10)),
    replace(BASE, primary=WindowState(100.0, None, NOW - 10_000)),
    replace(BASE, secondary=WindowState(100.0, LATER), has_credits=True),
    replace(BASE, blocked_until=LATER),
    replace(BASE, blocked_until=NOW - 1),
    replace(BASE, cooling_until=LATER),
    replace(BASE, in_flight=32),
    replace(BASE, circuits={"responses": CircuitView(open_until=LATER)}),
    replace(BASE, circuits={"responses": CircuitView(open_until=NOW - 1)}),
    replace(BASE, circuits={"responses": CircuitView(probing=True)}),
    replace(BASE, circuits={"control": CircuitView(open_until=LATER)}),
]


@pytest.mark.parametrize("snapshot", CASES)
@pytest.mark.parametrize("threshold", [100.0, 90.0])
def test_usable_now_agrees_with_the_router(snapshot: AccountSnapshot, threshold: float) -> None:
    router_says = e.exclusion(snapshot, threshold, NOW) is None
    assert usable_now(why_not_serving(snapshot, NOW, threshold=threshold)) == router_says
