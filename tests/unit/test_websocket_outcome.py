"""How a websocket session's lease is released: only the upstream's own failures count
against the account; endings the gateway caused are neutral."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pooler.actors import messages as m
from pooler.upstream.websocket import ACCOUNT_CRASHED, ACCOUNT_STOPPED, PING_TIMEOUT
from pooler.web.backend_codex.ws_session import (
    CLIENT_GONE,
    IDLE,
    KEY_REVOKED,
    LIMIT_REFUSED,
    UPSTREAM_CLOSED,
)
from pooler.web.backend_codex.ws_session import ClientSocket as _Socket


def session(ended: str, **fields: Any) -> _Socket:
    nothing = cast(Any, None)
    socket = _Socket(nothing, {}, "key", nothing, nothing, nothing, nothing)
    socket.ended = ended
    for name, value in fields.items():
        setattr(socket, name, value)
    return socket


@pytest.mark.parametrize(
    ("ended", "fields", "kind"),
    [
        (IDLE, {}, m.OK),
        (CLIENT_GONE, {}, m.OK),
        (CLIENT_GONE, {"abandoned": True}, m.CANCELLED),
        (UPSTREAM_CLOSED, {"upstream_code": 1000}, m.OK),
        (UPSTREAM_CLOSED, {"upstream_code": 1011}, m.STREAM_FAILED),
        (UPSTREAM_CLOSED, {"upstream_code": None}, m.STREAM_FAILED),
        (PING_TIMEOUT, {}, m.STREAM_FAILED),
        (KEY_REVOKED, {}, m.CANCELLED),
        (ACCOUNT_CRASHED, {}, m.CANCELLED),
        (ACCOUNT_STOPPED, {}, m.CANCELLED),
        (LIMIT_REFUSED, {}, m.CANCELLED),  # its refusal went to the account already
        (IDLE, {"refusal": m.Outcome(m.SERVER_ERROR, 500)}, m.SERVER_ERROR),
    ],
)
def test_release_outcome(ended: str, fields: dict[str, Any], kind: str) -> None:
    assert session(ended, **fields).outcome().kind == kind
