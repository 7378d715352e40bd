"""Websocket responses on `GET /backend-api/codex/responses` (protocol §1.3).

One text frame per event (the SSE `data` JSON), `codex.rate_limits` before each
response, serial `response.create` turns, `generate: false` prewarms, and per-connection
`previous_response_id` continuation: the new items extend the previous prompt and its
output, in the prompt cache too. Errors are wrapped frames `{"type":"error","status"}`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

import trio

from pooler.emulator import inbound
from pooler.emulator.asgi import Receive, Scope, Send, deny_websocket, request_headers
from pooler.emulator.events import build_events, stamp_sent_at
from pooler.emulator.faults import UPGRADE_FAULTS
from pooler.emulator.models import MODELS_ETAG
from pooler.emulator.prompt_cache import Context
from pooler.emulator.rejections import (
    Rejection,
    bad_request,
    unauthorized,
    websocket_upgrade_required,
)
from pooler.emulator.responses_http import DISCONNECT_AFTER_EVENTS
from pooler.emulator.state import EmulatorState, Grant, TurnLog

CLOSE_INTERNAL_ERROR = 1011


@dataclass
class _Session:
    state: EmulatorState
    grant: Grant
    path: str
    knobs: inbound.Knobs
    send: Send
    receive: Receive
    session_hash: str | None = None
    last_response_id: str | None = None
    context: Context | None = None  # of the last response


def error_frame(rejection: Rejection) -> dict[str, Any]:
    headers = {k.decode(): v.decode() for k, v in rejection.headers}
    return {
        "type": "error",
        "status": rejection.status,
        "error": rejection.error,
        "headers": headers,
    }


async def handle_websocket(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    now = time.time()
    headers = request_headers(scope)
    path = scope["path"]
    grant = state.authenticate(
        headers.get(b"authorization"), headers.get(b"chatgpt-account-id"), now
    )
    if isinstance(grant, Rejection):
        state.record("GET", path, transport="websocket", status=grant.status, now=now)
        return await deny_websocket(send, grant)
    fault = state.take_fault(grant.account, UPGRADE_FAULTS)
    if fault is not None:
        refused = (
            websocket_upgrade_required()
            if fault.kind == "ws_upgrade_426"
            else unauthorized("token_expired", "Provided authentication token is expired.")
        )
        state.record(
            "GET",
            path,
            transport="websocket",
            grant=grant,
            status=refused.status,
            fault=fault.kind,
            now=now,
        )
        return await deny_websocket(send, refused)
    turn_state = headers.get(b"x-codex-turn-state") or inbound.new_id("ts")
    accept_headers = [
        (b"x-codex-turn-state", turn_state.encode("latin-1")),
        (b"x-models-etag", MODELS_ETAG.encode()),
        (b"x-request-id", inbound.new_id("req").encode()),
    ]
    state.record("GET", path, transport="websocket", grant=grant, status=101, now=now)
    await send({"type": "websocket.accept", "headers": accept_headers})
    knobs = inbound.knobs_from(headers)
    session = _Session(
        state, grant, path, knobs, send, receive, session_hash=inbound.session_tag(headers)
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        if not await _on_frame(session, text):
            return


async def _send_event(session: _Session, event: dict[str, Any]) -> None:
    await session.send({"type": "websocket.send", "text": json.dumps(event, separators=(",", ":"))})


async def _on_frame(session: _Session, text: str) -> bool:
    """Answer one client frame; False when the connection is over."""
    body = inbound.parse_object(text.encode())
    if isinstance(body, Rejection):
        await _send_event(session, error_frame(body))
        return True
    kind = body.pop("type", None)
    if kind == "response.processed":
        return True
    if kind != "response.create":
        await _send_event(
            session, error_frame(bad_request(f"Unknown frame type {kind!r}", param="type"))
        )
        return True
    return await _turn(session, body, text.encode())


async def _turn(session: _Session, body: dict[str, Any], frame: bytes) -> bool:
    state, account, now = session.state, session.grant.account, time.time()
    log = TurnLog(body_sha256=inbound.body_sha256(frame), session_hash=session.session_hash)

    def record(status: int | None, fault: str | None = None) -> None:
        state.record(
            "response.create", session.path, transport="websocket",
            grant=session.grant, status=status, fault=fault, turn=log, now=now,
        )  # fmt: skip

    malformed = inbound.validate_shape(body)
    if malformed is not None:
        record(malformed.status)
        await _send_event(session, error_frame(malformed))
        return True
    previous = body.get("previous_response_id")
    if previous is not None and previous != session.last_response_id:
        record(400)
        missing = bad_request(
            "Previous response not found on this connection.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
        await _send_event(session, error_frame(missing))
        return True
    model = inbound.model_of(body)
    refused, fault = state.admit_response(account, now, model)
    if refused is not None:
        record(refused.status, fault.kind if fault else None)
        await _send_event(session, error_frame(refused))
        return True
    if fault is not None and fault.kind == "stall":
        record(None, "stall")
        with trio.move_on_after(fault.stall_seconds):
            while (await session.receive())["type"] != "websocket.disconnect":
                pass
            return False
        await session.send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
        return False
    after = session.context if previous is not None else None
    prompt = inbound.read_prompt(body, len(frame), account, after)
    log = replace(log, input_tokens=prompt.input_tokens, cached_tokens=prompt.cached_tokens)
    # A turn's `client_metadata` knobs (what passes through a gateway) win over the
    # handshake's headers.
    knobs = inbound.knobs_from({}, body)
    knobs = session.knobs if knobs == inbound.Knobs() else knobs
    reply, turn = inbound.plan_turn(body, prompt, knobs, now)
    generate = body.get("generate") is not False
    events = [state.rate_limits_event(account, now), *build_events(reply, turn, generate=generate)]
    session.context = Context.after(prompt.end, events[-1]["response"]["output"])
    record(200, fault.kind if fault else None)
    cut = fault is not None and fault.kind == "disconnect_mid_stream"
    for index, event in enumerate(events):
        if cut and index == DISCONNECT_AFTER_EVENTS + 1:  # + the codex.rate_limits frame
            await session.send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
            return False
        if knobs.delay_s:
            await trio.sleep(knobs.delay_s)
        if index == len(events) - 1:
            if generate:
                state.charge(account, time.time(), model)
            if knobs.sent_at:
                stamp_sent_at(event)
        await _send_event(session, event)
    session.last_response_id = turn.response_id
    return True
