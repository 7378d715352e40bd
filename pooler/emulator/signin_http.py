"""The sign-in endpoints of the fake auth server and their control API (protocol §6.4).

    GET  /oauth/authorize                      302 to redirect_uri with `code` and `state`
         test knobs (query): emulator_account=<label or id> (default: each account in
         turn), emulator_deny=1 (the user refuses: error=access_denied)
    POST /api/accounts/deviceauth/usercode     {client_id} -> {device_auth_id, user_code,
                                               interval (a string, seconds), expires_at}
    POST /api/accounts/deviceauth/token        {device_auth_id, user_code} -> 403 pending,
                                               200 {authorization_code, code_challenge,
                                               code_verifier}, 400 access_denied|expired_token
    GET  /codex/device                         where a person would type the user code

    POST /_emulator/device/approve  {"user_code"?, "account_id"?}  (default: the latest
                                    pending code, the next account)
    POST /_emulator/device/deny     {"user_code"?}
    POST /_emulator/device/expire   {"user_code"?}
    POST /_emulator/signin          {"device_interval_seconds"?, "device_ttl_seconds"?,
                                     "code_ttl_seconds"?, "expire_codes"? (bool)}
    GET  /_emulator/signin          pending device sign-ins and the number of pending codes

The authorization_code grant itself is served by `oauth.handle_token`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from pooler.emulator.accounts import FakeAccount
from pooler.emulator.asgi import (
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
from pooler.emulator.rejections import Rejection, bad_request, rejection
from pooler.emulator.signin import DEVICE_CALLBACK_PATH, REDIRECT_URIS, DeviceGrant
from pooler.emulator.state import EmulatorState
from pooler.emulator.tokens import CODEX_CLIENT_ID

AUTHORIZE_PATH = "/oauth/authorize"
USERCODE_PATH = "/api/accounts/deviceauth/usercode"
DEVICE_TOKEN_PATH = "/api/accounts/deviceauth/token"
DEVICE_PAGE_PATH = "/codex/device"
DEVICE_PAGE = (
    b"<!doctype html><title>Codex device sign-in (emulator)</title>"
    b"<h1>Enter the one-time code</h1><p>The emulator completes device sign-ins through"
    b" POST /_emulator/device/approve.</p>"
)


def _issuer(scope: Scope) -> str:
    host = request_headers(scope).get(b"host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}"


def _redirect(location: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    return 302, [(b"location", location.encode()), (b"cache-control", b"no-store")]


def authorize(state: EmulatorState, params: dict[str, str], now: float) -> str | Rejection:
    """Where the browser goes next (the redirect URI with a code or an error), or a
    refusal shown to the browser itself (a client or redirect URI it must not trust)."""
    if params.get("client_id") != CODEX_CLIENT_ID:
        return bad_request("Unknown client_id", param="client_id", code="invalid_client")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in REDIRECT_URIS:
        return bad_request(
            "redirect_uri is not registered for this client",
            param="redirect_uri",
            code="invalid_request",
        )
    back: dict[str, str] = {}
    if params.get("response_type") != "code":
        back = {"error": "unsupported_response_type"}
    elif params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
        back = {"error": "invalid_request", "error_description": "PKCE S256 is required"}
    elif params.get("emulator_deny"):
        back = {"error": "access_denied", "error_description": "The user denied the sign-in"}
    else:
        wanted = params.get("emulator_account")
        account = (
            state.find_account(wanted) if wanted else state.sign_ins.next_account(state.accounts)
        )
        if account is None:
            return bad_request(f"unknown account {wanted!r}", param="emulator_account")
        code = state.sign_ins.issue_code(
            account, CODEX_CLIENT_ID, redirect_uri, params["code_challenge"], now
        )
        back = {"code": code, "scope": params.get("scope", "")}
    if "state" in params:
        back["state"] = params["state"]
    return f"{redirect_uri}?{urlencode(back)}"


async def handle_authorize(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    now = time.time()
    outcome = authorize(state, query(scope), now)
    if isinstance(outcome, Rejection):
        state.record("GET", AUTHORIZE_PATH, status=outcome.status, now=now)
        return await send_rejection(send, outcome)
    state.record("GET", AUTHORIZE_PATH, status=302, now=now)
    status, headers = _redirect(outcome)
    await send_bytes(send, status, b"", headers)


async def _json_object(receive: Receive) -> dict[str, Any] | Rejection | None:
    raw = await read_body(receive)
    if raw is None:
        return None
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return bad_request("The body must be JSON", code="invalid_json")
    return body if isinstance(body, dict) else bad_request("The body must be a JSON object")


async def handle_usercode(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now = time.time()
    body = await _json_object(receive)
    if body is None:
        return
    if not isinstance(body, Rejection) and body.get("client_id") != CODEX_CLIENT_ID:
        body = bad_request("Unknown client_id", param="client_id", code="invalid_client")
    if isinstance(body, Rejection):
        state.record("POST", USERCODE_PATH, status=body.status, now=now)
        return await send_rejection(send, body)
    device = state.sign_ins.start_device(CODEX_CLIENT_ID, now)
    state.record("POST", USERCODE_PATH, status=200, now=now)
    expires = datetime.fromtimestamp(device.expires_at, UTC).isoformat().replace("+00:00", "Z")
    await send_json(
        send,
        200,
        {
            "device_auth_id": device.device_auth_id,
            "user_code": device.user_code,
            "interval": str(state.sign_ins.device_interval),
            "expires_at": expires,
        },
        [(b"cache-control", b"no-store")],
    )


def _poll(
    state: EmulatorState, scope: Scope, body: dict[str, Any], now: float
) -> DeviceGrant | Rejection:
    device_auth_id, user_code = body.get("device_auth_id"), body.get("user_code")
    if not isinstance(device_auth_id, str) or not isinstance(user_code, str):
        return bad_request("device_auth_id and user_code are required strings")
    redirect_uri = _issuer(scope) + DEVICE_CALLBACK_PATH
    return state.sign_ins.poll_device(device_auth_id, user_code, redirect_uri, now)


async def handle_device_token(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    now = time.time()
    body = await _json_object(receive)
    if body is None:
        return
    answer = body if isinstance(body, Rejection) else _poll(state, scope, body, now)
    if isinstance(answer, Rejection):
        state.record("POST", DEVICE_TOKEN_PATH, status=answer.status, now=now)
        return await send_rejection(send, answer)
    state.record("POST", DEVICE_TOKEN_PATH, status=200, now=now)
    await send_json(
        send,
        200,
        {
            "authorization_code": answer.authorization_code,
            "code_challenge": answer.code_challenge,
            "code_verifier": answer.code_verifier,
        },
        [(b"cache-control", b"no-store")],
    )


async def handle_device_page(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    state.record("GET", DEVICE_PAGE_PATH, status=200, now=time.time())
    await send_bytes(send, 200, DEVICE_PAGE, [(b"content-type", b"text/html; charset=utf-8")])


# -- control API -------------------------------------------------------------------------


def _user_code(body: dict[str, Any]) -> str | Rejection | None:
    code = body.get("user_code")
    if code is not None and not isinstance(code, str):
        return bad_request("user_code must be a string", param="user_code")
    return code


def device_control(
    state: EmulatorState, action: str, body: dict[str, Any]
) -> dict[str, Any] | Rejection:
    """approve | deny | expire one device sign-in (named by user code, else the latest)."""
    code = _user_code(body)
    if isinstance(code, Rejection):
        return code
    device = state.sign_ins.find_device(code)
    if device is None:
        return rejection(404, "not_found", "no such device sign-in", param="user_code")
    account: FakeAccount | None = None
    if action == "approve":
        key = body.get("account_id")
        account = (
            state.find_account(key)
            if isinstance(key, str)
            else state.sign_ins.next_account(state.accounts)
        )
        if account is None:
            return bad_request(f"unknown account {key!r}", param="account_id")
        device.account = account
    elif action == "deny":
        device.denied = True
    else:
        device.expires_at = 0.0
    return {
        "user_code": device.user_code,
        "status": {"approve": "approved", "deny": "denied"}.get(action, "expired"),
        "account_id": account.account_id if account is not None else None,
    }


def signin_settings(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any] | Rejection:
    desk = state.sign_ins
    for name, attr in (
        ("device_interval_seconds", "device_interval"),
        ("device_ttl_seconds", "device_ttl"),
        ("code_ttl_seconds", "code_ttl"),
    ):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return bad_request(f"{name} must be an integer >= 0", param=name)
        setattr(desk, attr, value if attr == "device_interval" else float(value))
    expired = desk.expire_codes() if body.get("expire_codes") is True else 0
    return {**signin_view(state), "expired_codes": expired}


def signin_view(state: EmulatorState) -> dict[str, Any]:
    desk = state.sign_ins
    return {
        "device_interval_seconds": desk.device_interval,
        "device_ttl_seconds": desk.device_ttl,
        "code_ttl_seconds": desk.code_ttl,
        "pending_codes": len(desk.codes),
        "devices": [
            {
                "user_code": d.user_code,
                "expires_at": d.expires_at,
                "status": "denied"
                if d.denied
                else ("approved" if d.account is not None else "pending"),
            }
            for d in desk.devices.values()
        ],
    }
