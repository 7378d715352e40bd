"""The control API under `/_emulator/`: arm faults, read the request log, reset, set usage
and how an account reports it.

    POST /_emulator/faults    {"account_id", "kind", "times"?, "stall_seconds"?,
                               "resets_in_seconds"? (usage_limit_429),
                               "retry_after_seconds"? (rate_limit_429)}
    POST /_emulator/usage     {"account_id", "primary_used_percent"?, "secondary_used_percent"?,
                               "family"?, "limit_name"?}: with `family` (e.g.
                               `codex_bengalfox`) an extra, model-scoped limit family
    POST /_emulator/accounts  {"account_id", "quiet_headers"?, "rate_limits_event"?,
                               "usage_delay_ms"?, "models"? (the slugs its /models lists and
                               its turns accept; null: the default catalog)}
    POST /_emulator/reset     everything back to the start (tokens stay valid)
    GET  /_emulator/faults | requests | accounts
    /_emulator/device/approve|deny|expire and /_emulator/signin: sign-ins (signin_http)
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from pooler.emulator.accounts import FakeAccount
from pooler.emulator.asgi import Receive, Scope, Send, read_body, send_json, send_rejection
from pooler.emulator.faults import DEFAULT_STALL_SECONDS
from pooler.emulator.rejections import Rejection, bad_request, method_not_allowed, not_found
from pooler.emulator.signin_http import device_control, signin_settings, signin_view
from pooler.emulator.state import EmulatorState

PREFIX = "/_emulator/"


async def _json_body(receive: Receive) -> dict[str, Any] | Rejection | None:
    raw = await read_body(receive)
    if raw is None:
        return None
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return bad_request("The body must be JSON", code="invalid_json")
    return body if isinstance(body, dict) else bad_request("The body must be a JSON object")


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def arm_fault(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any] | Rejection:
    key, kind = body.get("account_id"), body.get("kind")
    times, stall = body.get("times", 1), body.get("stall_seconds", DEFAULT_STALL_SECONDS)
    resets_in, retry_after = body.get("resets_in_seconds"), body.get("retry_after_seconds")
    if not isinstance(key, str) or not isinstance(kind, str):
        return bad_request("account_id and kind are required strings")
    if isinstance(times, bool) or not isinstance(times, int):
        return bad_request("times must be an integer", param="times")
    if not _is_number(stall):
        return bad_request("stall_seconds must be a number", param="stall_seconds")
    if resets_in is not None and not _is_number(resets_in):
        return bad_request("resets_in_seconds must be a number", param="resets_in_seconds")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int)
    ):
        return bad_request("retry_after_seconds must be an integer", param="retry_after_seconds")
    try:
        fault = state.arm_fault(
            key, kind, times, float(stall), resets_in=resets_in, retry_after=retry_after
        )
    except ValueError as exc:
        return bad_request(str(exc))
    account = state.find_account(key)
    assert account is not None
    return {"account_id": account.account_id, "kind": fault.kind, "times": fault.remaining}


def _account_of(state: EmulatorState, body: dict[str, Any]) -> FakeAccount | Rejection:
    key = body.get("account_id")
    account = state.find_account(key) if isinstance(key, str) else None
    if account is None:
        return bad_request(f"unknown account {key!r}", param="account_id")
    return account


def _view_of(state: EmulatorState, account: FakeAccount, now: float) -> dict[str, Any]:
    return next(a for a in state.accounts_view(now) if a["account_id"] == account.account_id)


def set_usage(state: EmulatorState, body: dict[str, Any], now: float) -> dict[str, Any] | Rejection:
    account = _account_of(state, body)
    if isinstance(account, Rejection):
        return account
    values = [body.get("primary_used_percent"), body.get("secondary_used_percent")]
    for value in values:
        if value is not None and not _is_number(value):
            return bad_request("used percentages must be numbers")
    family, name = body.get("family"), body.get("limit_name")
    if family is None:
        state.set_usage(account, values[0], values[1], now)
        return _view_of(state, account, now)
    if not isinstance(family, str) or (name is not None and not isinstance(name, str)):
        return bad_request("family and limit_name must be strings", param="family")
    try:
        state.set_family_usage(account, family, name, values[0], values[1], now)
    except ValueError as exc:
        return bad_request(str(exc), param="family")
    return _view_of(state, account, now)


def set_reporting(
    state: EmulatorState, body: dict[str, Any], now: float
) -> dict[str, Any] | Rejection:
    """How one account reports its quota: quiet headers, stream events, a slow usage API."""
    account = _account_of(state, body)
    if isinstance(account, Rejection):
        return account
    changes: dict[str, Any] = {}
    for name in ("quiet_headers", "rate_limits_event"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            return bad_request(f"{name} must be a boolean", param=name)
        if value is not None:
            changes[name] = value
    delay = body.get("usage_delay_ms")
    if delay is not None:
        if not _is_number(delay) or delay < 0:
            return bad_request("usage_delay_ms must be a number >= 0", param="usage_delay_ms")
        changes["usage_delay_s"] = float(delay) / 1000
    models = body.get("models", ...)
    if models is not ... and models is not None:
        if not isinstance(models, list) or not all(isinstance(x, str) and x for x in models):
            return bad_request("models must be a list of model slugs", param="models")
        models = tuple(dict.fromkeys(models))
    if models is not ...:
        account.models = models
    account.reporting = replace(account.reporting, **changes)
    return _view_of(state, account, now)


def _read_view(state: EmulatorState, name: str, now: float) -> dict[str, Any]:
    if name == "faults":
        return {"faults": state.faults.pending()}
    if name == "requests":
        return {"requests": list(state.requests)}
    if name == "signin":
        return signin_view(state)
    return {"accounts": state.accounts_view(now)}


async def handle_control(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now, method, name = time.time(), scope["method"], scope["path"].removeprefix(PREFIX)
    routes = {
        "faults": ("GET", "POST"),
        "requests": ("GET",),
        "reset": ("POST",),
        "accounts": ("GET", "POST"),
        "usage": ("POST",),
        "signin": ("GET", "POST"),
        "device/approve": ("POST",),
        "device/deny": ("POST",),
        "device/expire": ("POST",),
    }
    if name not in routes:
        return await send_rejection(send, not_found(scope["path"]))
    if method not in routes[name]:
        return await send_rejection(send, method_not_allowed(method, scope["path"]))
    if method == "GET":
        return await send_json(send, 200, _read_view(state, name, now))
    body = await _json_body(receive)
    if body is None:
        return
    if isinstance(body, Rejection):
        return await send_rejection(send, body)
    if name == "reset":
        state.reset()
        return await send_json(send, 200, {"ok": True})
    if name == "faults":
        result = arm_fault(state, body)
    elif name == "accounts":
        result = set_reporting(state, body, now)
    elif name == "signin":
        result = signin_settings(state, body)
    elif name.startswith("device/"):
        result = device_control(state, name.removeprefix("device/"), body)
    else:
        result = set_usage(state, body, now)
    if isinstance(result, Rejection):
        return await send_rejection(send, result)
    await send_json(send, 200, result)
