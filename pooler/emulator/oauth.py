"""`POST /oauth/token`: refresh with rotating single-use refresh tokens (protocol §6.3) and
the authorization_code grant that ends a browser or device sign-in (§6.4, `signin`)."""

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
from pooler.emulator.tokens import TokenSet

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
    grant = request.get("grant_type")
    if grant == "authorization_code":
        return await _code_grant(state, request, path, now, send)
    if grant != "refresh_token":
        state.record("POST", path, status=400, now=now)
        refused = bad_request(
            "grant_type must be refresh_token or authorization_code",
            code="unsupported_grant_type",
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
    await _send_tokens(send, result, now)


async def _code_grant(
    state: EmulatorState, request: dict[str, Any], path: str, now: float, send: Send
) -> None:
    fields = [request.get(k) for k in ("code", "code_verifier", "redirect_uri", "client_id")]
    if not all(isinstance(v, str) and v for v in fields):
        state.record("POST", path, status=400, now=now)
        refused = bad_request(
            "code, code_verifier, redirect_uri and client_id are required", code="invalid_request"
        )
        return await send_rejection(send, refused)
    code, verifier, redirect_uri, client_id = (str(v) for v in fields)
    account = state.sign_ins.redeem(code, client_id, redirect_uri, verifier, now)
    if isinstance(account, Rejection):
        state.record("POST", path, status=account.status, now=now)
        return await send_rejection(send, account)
    tokens = state.issue_sign_in(account, now)
    state.record("POST", path, account=account, status=200, now=now)
    await _send_tokens(send, tokens, now)


async def _send_tokens(send: Send, tokens: TokenSet, now: float) -> None:
    await send_json(
        send,
        200,
        {
            "access_token": tokens.access_token,
            "id_token": tokens.id_token,
            "refresh_token": tokens.refresh_token,
            "expires_in": max(0, int(tokens.expires_at - now)),
            "token_type": "bearer",
            "scope": SCOPE,
        },
        [(b"cache-control", b"no-store")],
    )
