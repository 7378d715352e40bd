"""`POST /backend-api/codex/responses`: the SSE answer, one ASGI body message per event.

Quota is reported in `x-codex-*` headers (unless the account or request is quiet) and, when
asked for, in `codex.rate_limits` events ahead of `response.created`, as on websockets.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Any

import trio

from pooler.emulator import inbound
from pooler.emulator.asgi import Receive, Scope, Send, read_body, request_headers, send_rejection
from pooler.emulator.events import build_events, encode_sse, stamp_sent_at
from pooler.emulator.models import MODELS_ETAG
from pooler.emulator.rejections import Headers, Rejection
from pooler.emulator.state import EmulatorState, Grant, TurnLog

DISCONNECT_AFTER_EVENTS = 3


async def wait_for_disconnect(receive: Receive, seconds: float) -> None:
    """Send nothing until the client goes away or `seconds` pass."""
    with trio.move_on_after(seconds):
        while (await receive())["type"] != "http.disconnect":
            pass


def turn_headers(
    state: EmulatorState,
    grant: Grant,
    headers: dict[bytes, str],
    model: str,
    now: float,
    *,
    quiet: bool = False,
) -> Headers:
    turn_state = headers.get(b"x-codex-turn-state") or inbound.new_id("ts")
    return [
        (b"x-request-id", inbound.new_id("req").encode()),
        (b"openai-model", model.encode()),
        (b"x-codex-turn-state", turn_state.encode("latin-1")),
        (b"x-models-etag", MODELS_ETAG.encode()),
        *state.rate_limit_headers(grant.account, now, quiet=quiet),
    ]


async def handle_responses(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    now = time.time()
    headers = request_headers(scope)
    path = scope["path"]
    log = TurnLog(session_hash=inbound.session_tag(headers))

    async def reject(rejection: Rejection, grant: Grant | None, fault: str | None = None) -> None:
        state.record(
            "POST", path, grant=grant, status=rejection.status, fault=fault, turn=log, now=now
        )
        await send_rejection(send, rejection, [(b"x-request-id", inbound.new_id("req").encode())])

    grant = state.authenticate(
        headers.get(b"authorization"), headers.get(b"chatgpt-account-id"), now
    )
    if isinstance(grant, Rejection):
        return await reject(grant, None)
    raw = await read_body(receive)
    if raw is None:
        return
    log = replace(log, body_sha256=inbound.body_sha256(raw))
    data = inbound.decode_body(raw, headers.get(b"content-encoding"))
    if isinstance(data, Rejection):
        return await reject(data, grant)
    body = inbound.parse_object(data)
    if isinstance(body, Rejection):
        return await reject(body, grant)
    invalid = inbound.validate_http(body)
    if invalid is not None:
        return await reject(invalid, grant)
    knobs = inbound.knobs_from(headers, body)
    model = inbound.model_of(body)
    refused, fault = state.admit_response(grant.account, now, model, quiet=knobs.quiet_headers)
    if refused is not None:
        return await reject(refused, grant, fault.kind if fault else None)
    if fault is not None and fault.kind == "stall":
        state.record("POST", path, grant=grant, status=None, fault="stall", turn=log, now=now)
        return await wait_for_disconnect(receive, fault.stall_seconds)

    prompt = inbound.read_prompt(body, len(data), grant.account)
    log = replace(log, input_tokens=prompt.input_tokens, cached_tokens=prompt.cached_tokens)
    reply, turn = inbound.plan_turn(body, prompt, knobs, now)
    events = build_events(reply, turn)
    if knobs.rate_limits_event or grant.account.reporting.rate_limits_event:
        events = [*state.rate_limits_events(grant.account, now), *events]
    response_headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        *turn_headers(state, grant, headers, turn.model, now, quiet=knobs.quiet_headers),
    ]
    fault_kind = fault.kind if fault else None
    state.record("POST", path, grant=grant, status=200, fault=fault_kind, turn=log, now=now)
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    cut = fault is not None and fault.kind == "disconnect_mid_stream"
    stream = partial(
        _send_events,
        state,
        grant,
        events,
        send,
        knobs.delay_s,
        model,
        cut=cut,
        end_delay_s=knobs.end_delay_s,
        sent_at=knobs.sent_at,
    )
    if not knobs.delay_s and not knobs.end_delay_s:
        return await stream()
    async with trio.open_nursery() as nursery:  # a slow stream stops when its client leaves
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        await stream()
        nursery.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _send_events(
    state: EmulatorState,
    grant: Grant,
    events: list[dict[str, Any]],
    send: Send,
    delay_s: float,
    model: str,
    *,
    cut: bool,
    end_delay_s: float = 0.0,
    sent_at: bool = False,
) -> None:
    """One ASGI body message per event; the account is charged as the stream completes.
    With `sent_at`, the terminal event's `response.metadata` is stamped as it is sent."""
    last = len(events) - 1
    for index, event in enumerate(events):
        if cut and index == DISCONNECT_AFTER_EVENTS:
            return  # no final body message: Hypercorn drops the connection mid-stream
        if delay_s:
            await trio.sleep(delay_s)
        if index == last:
            state.charge(grant.account, time.time(), model)
            if sent_at:
                stamp_sent_at(event)
        chunk = encode_sse(event)
        ends = index == last and not end_delay_s
        await send({"type": "http.response.body", "body": chunk, "more_body": not ends})
    if end_delay_s:
        await trio.sleep(end_delay_s)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
