"""An upstream account's lifecycle: its states, the events that move it, and the one table.

Theory of operation
-------------------
An account is in exactly one `Lifecycle` state. Only `ACTIVE` accounts are routed to;
`PAUSED` and `DISABLED` are an operator's choice; `REAUTH_REQUIRED` means the auth server
refused the account's refresh token for good, so no token it holds will ever work again.

The state changes only through an `Event`, looked up in `TRANSITIONS` (state -> event ->
new state). A pair that is not in the table is illegal: `transition` raises
`IllegalTransition` and the caller keeps its state unchanged (the function is pure: it
returns the new state, it never mutates anything). Three parties apply events:

- the operator (`PAUSE`, `RESUME`, `DISABLE`, `REIMPORT`, through `pooler.store`);
- the gateway's AccountActor (`LOGIN_REFUSED`, when a refresh is refused for good);
- the database, replayed on every node: a node learns the stored state (another node or
  the operator moved it) and its AccountActor follows with `follow`, which finds the event
  that leads there and refuses a move no event makes.

The one move nothing but a fresh login makes is leaving `REAUTH_REQUIRED`: pause and resume
are refused there (the stored refresh token is dead), only `REIMPORT` (a new auth.json)
brings the account back. So a stale "paused" from the database, arriving after the actor
found the token dead, is refused rather than hiding the dead login.

Values are stored in the database as text: `Lifecycle` is a `StrEnum`, equal to its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "TRANSITIONS",
    "Event",
    "IllegalTransition",
    "Lifecycle",
    "follow",
    "moves",
    "transition",
]


class Lifecycle(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REAUTH_REQUIRED = "reauth_required"
    DISABLED = "disabled"


class Event(StrEnum):
    PAUSE = "pause"  # operator: out of routing until resumed
    RESUME = "resume"  # operator: back into routing
    DISABLE = "disable"  # operator: out of routing
    LOGIN_REFUSED = "login_refused"  # the auth server refused the refresh token for good
    REIMPORT = "reimport"  # operator: a fresh auth.json, a new login


class IllegalTransition(ValueError):
    """An event the account's current state does not allow; the state is unchanged."""

    def __init__(self, state: Lifecycle, event: Event | None, target: Lifecycle | None) -> None:
        what = f"event {event.value!r}" if event is not None else f"a move to {target!r}"
        super().__init__(f"{what} is not allowed from lifecycle {state.value!r}")
        self.state = state
        self.event = event
        self.target = target


_A, _P, _R, _D = Lifecycle
_TABLE: dict[Lifecycle, dict[Event, Lifecycle]] = {
    _A: {Event.PAUSE: _P, Event.RESUME: _A, Event.DISABLE: _D},
    _P: {Event.PAUSE: _P, Event.RESUME: _A, Event.DISABLE: _D},
    _D: {Event.PAUSE: _P, Event.RESUME: _A, Event.DISABLE: _D},
    _R: {Event.DISABLE: _D},
}
for _moves in _TABLE.values():  # from anywhere: a refused login, a fresh one
    _moves[Event.LOGIN_REFUSED] = _R
    _moves[Event.REIMPORT] = _A

TRANSITIONS: Final[Mapping[Lifecycle, Mapping[Event, Lifecycle]]] = MappingProxyType(
    {state: MappingProxyType(moves) for state, moves in _TABLE.items()}
)


def transition(state: str, event: Event) -> Lifecycle:
    """The state ``event`` leads to from ``state``; `IllegalTransition` if none."""
    current = Lifecycle(state)
    after = TRANSITIONS[current].get(event)
    if after is None:
        raise IllegalTransition(current, event, None)
    return after


def follow(state: str, target: str) -> Lifecycle:
    """Move to ``target`` (the database's word) if some event leads there from ``state``."""
    current, wanted = Lifecycle(state), Lifecycle(target)
    if wanted == current or wanted in TRANSITIONS[current].values():
        return wanted
    raise IllegalTransition(current, None, wanted)


def moves(event: Event) -> dict[str, str]:
    """``{state before: state after}`` of ``event`` as plain text, for the states that allow it."""
    return {
        state.value: after.value
        for state, table in TRANSITIONS.items()
        if (after := table.get(event)) is not None
    }
