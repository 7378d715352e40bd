"""The account lifecycle's transition table, without I/O: legal moves, illegal ones refused
with the state unchanged, and the operator's moves read from the same table."""

from __future__ import annotations

import pytest

from pooler.routing.lifecycle import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    Lifecycle,
    follow,
    moves,
    transition,
)
from pooler.store.accounts import LIFECYCLES, OPERATOR_MOVES

A, P, R, D = Lifecycle.ACTIVE, Lifecycle.PAUSED, Lifecycle.REAUTH_REQUIRED, Lifecycle.DISABLED


def test_every_state_has_a_row_and_values_are_the_stored_text() -> None:
    assert set(TRANSITIONS) == set(Lifecycle)
    assert LIFECYCLES == ("active", "paused", "reauth_required", "disabled")
    assert A == "active" and f"{R}" == "reauth_required"


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        (A, Event.PAUSE, P),
        (P, Event.RESUME, A),
        (D, Event.RESUME, A),
        (A, Event.DISABLE, D),
        (R, Event.DISABLE, D),
        (A, Event.LOGIN_REFUSED, R),
        (P, Event.LOGIN_REFUSED, R),
        (R, Event.LOGIN_REFUSED, R),
        (R, Event.REIMPORT, A),
        (P, Event.REIMPORT, A),
    ],
)
def test_legal_transitions(before: Lifecycle, event: Event, after: Lifecycle) -> None:
    assert transition(before, event) is after
    assert transition(before.value, event) is after  # the text read from the database


@pytest.mark.parametrize("event", [Event.PAUSE, Event.RESUME])
def test_a_dead_login_is_neither_paused_nor_resumed(event: Event) -> None:
    state = R
    with pytest.raises(IllegalTransition) as refused:
        state = transition(state, event)
    assert state is R  # unchanged
    assert refused.value.state is R and refused.value.event is event
    assert "reauth_required" in str(refused.value)


def test_follow_accepts_what_an_event_leads_to_and_refuses_the_rest() -> None:
    assert follow("active", "paused") is P
    assert follow("paused", "paused") is P  # no change is always fine
    assert follow("reauth_required", "active") is A  # a fresh login
    with pytest.raises(IllegalTransition) as refused:
        follow("reauth_required", "paused")  # a stale "paused" after the login died
    assert refused.value.target is P and refused.value.event is None


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError):
        transition("deleted", Event.RESUME)


def test_operator_moves_come_from_the_table() -> None:
    assert moves(Event.PAUSE) == {"active": "paused", "paused": "paused", "disabled": "paused"}
    assert {"pause": moves(Event.PAUSE), "resume": moves(Event.RESUME)} == OPERATOR_MOVES
    assert "reauth_required" not in OPERATOR_MOVES["resume"]
    assert all(type(k) is str and type(v) is str for k, v in OPERATOR_MOVES["pause"].items())
