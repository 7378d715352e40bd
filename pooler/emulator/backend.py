"""The small JSON routes of the fake backend: models, usage and legacy compact."""

from __future__ import annotations

import time

import trio

from pooler.emulator import inbound
from pooler.emulator.asgi import (
    JSON,
    Receive,
    Scope,
    Send,
    query,
    read_body,
    request_headers,
    send_bytes,
    send_json,
    send_rejection,
)
from pooler.emulator.events import Turn, compaction_item, usage_dict
from pooler.emulator.models import catalog_for
from pooler.emulator.rejections import Rejection, bad_request
from pooler.emulator.state import EmulatorState, Grant

# The faults a compact call can meet: the HTTP-status ones (no stall or cut stream in JSON).
COMPACT_FAULTS = frozenset(
    {"usage_limit_429", "rate_limit_429", "server_error_500", "unauthorized_401"}
)


async def _authenticate(state: EmulatorState, scope: Scope, send: Send, now: float) -> Grant | None:
    headers = request_headers(scope)
    grant = state.authenticate(
        headers.get(b"authorization"), headers.get(b"chatgpt-account-id"), now
    )
    if isinstance(grant, Rejection):
        state.record(scope["method"], scope["path"], status=grant.status, now=now)
        await send_rejection(send, grant)
        return None
    return grant


async def handle_models(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    if not query(scope).get("client_version"):
        state.record("GET", scope["path"], grant=grant, status=400, now=now)
        missing = bad_request("client_version is required", param="client_version")
        return await send_rejection(send, missing)
    body, tag = catalog_for(grant.account.models)
    etag = (b"etag", tag.encode())
    if request_headers(scope).get(b"if-none-match") == tag:
        state.record("GET", scope["path"], grant=grant, status=304, now=now)
        await send({"type": "http.response.start", "status": 304, "headers": [etag]})
        return await send({"type": "http.response.body", "body": b""})
    state.record("GET", scope["path"], grant=grant, status=200, now=now)
    await send_bytes(send, 200, body, [JSON, etag])


async def handle_usage(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    state.record("GET", scope["path"], grant=grant, status=200, now=now)
    delay = grant.account.reporting.usage_delay_s
    if delay:  # a slow usage endpoint: the usage as it stands when the answer leaves
        await trio.sleep(delay)
        now = time.time()
    await send_json(send, 200, state.usage_payload(grant.account, now))


async def handle_compact(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    """Legacy unary compaction: JSON whose `output` is one `compaction` item."""
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    raw = await read_body(receive)
    if raw is None:
        return
    data = inbound.decode_body(raw, request_headers(scope).get(b"content-encoding"))
    body = inbound.parse_object(data) if isinstance(data, bytes) else data
    if not isinstance(body, Rejection):
        body = inbound.validate_shape(body) or body
    if isinstance(body, Rejection):
        state.record("POST", scope["path"], grant=grant, status=body.status, now=now)
        return await send_rejection(send, body)
    assert isinstance(data, bytes)
    fault = state.take_fault(grant.account, COMPACT_FAULTS)
    if fault is not None:
        rejection = state.fault_rejection(fault, grant.account, now)
        assert rejection is not None
        state.record(
            "POST", scope["path"], grant=grant, status=rejection.status, fault=fault.kind, now=now
        )
        return await send_rejection(send, rejection)
    model = body.get("model") if isinstance(body.get("model"), str) else inbound.DEFAULT_MODEL
    turn = Turn(inbound.new_id("resp"), str(model), int(now), max(1, len(data) // 4))
    item = compaction_item(turn)
    state.record("POST", scope["path"], grant=grant, status=200, now=now)
    state.charge(grant.account, now)
    payload = {
        "id": turn.response_id,
        "object": "response.compaction",
        "created_at": turn.created_at,
        "output": [item],
        "usage": usage_dict(turn, len(item["encrypted_content"]) // 8),
    }
    await send_json(send, 200, payload, [(b"x-request-id", inbound.new_id("req").encode())])
