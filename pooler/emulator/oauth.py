"""`POST /oauth/token`: refresh with rotating single-use refresh tokens (protocol §6.3)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from pooler.emulator.asgi import (
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_json,
    send_rejection,
)
from pooler.emulator.rejections import Rejection, bad_request
from pooler.emulator.state import EmulatorState

SCOPE = "openid profile email offline_access"


def parse_token_request(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    """A JSON or form-encoded body as a dict; None when it is neither."""
    if not (content_type or "").startswith("application/x-www-form-urlencoded"):
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    try:
        return dict(parse_qsl(body.decode("utf-8"), strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        return None


async def handle_token(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now = time.time()
    path = scope["path"]
    raw = await read_body(receive)
    if raw is None:
        return
    request = parse_token_request(raw, request_headers(scope).get(b"content-type"))
    if request is None:
        state.record("POST", path, status=400, now=now)
        return await send_rejection(
            send, bad_request("Invalid token request", code="invalid_request")
        )
    if request.get("grant_type") != "refresh_token":
        state.record("POST", path, status=400, now=now)
        refused = bad_request(
            "Only grant_type=refresh_token is supported", code="unsupported_grant_type"
        )
        return await send_rejection(send, refused)
    token = request.get("refresh_token")
    if not isinstance(token, str) or not token:
        state.record("POST", path, status=400, now=now)
        refused = bad_request(
            "refresh_token is required", param="refresh_token", code="invalid_request"
        )
        return await send_rejection(send, refused)
    owner = state.refresh_owner(token)
    result = state.refresh(token, now)
    if isinstance(result, Rejection):
        state.record("POST", path, account=owner, status=result.status, now=now)
        return await send_rejection(send, result)
    state.record("POST", path, account=owner, status=200, now=now)
    await send_json(
        send,
        200,
        {
            "access_token": result.access_token,
            "id_token": result.id_token,
            "refresh_token": result.refresh_token,
            "expires_in": max(0, int(result.expires_at - now)),
            "token_type": "bearer",
            "scope": SCOPE,
        },
        [(b"cache-control", b"no-store")],
    )
