"""The control API under `/_emulator/`: arm faults, read the request log, reset, set usage."""

from __future__ import annotations

import json
import time
from typing import Any

from pooler.emulator.asgi import Receive, Scope, Send, read_body, send_json, send_rejection
from pooler.emulator.faults import DEFAULT_STALL_SECONDS
from pooler.emulator.rejections import Rejection, bad_request, method_not_allowed, not_found
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


def arm_fault(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any] | Rejection:
    key, kind = body.get("account_id"), body.get("kind")
    times, stall = body.get("times", 1), body.get("stall_seconds", DEFAULT_STALL_SECONDS)
    if not isinstance(key, str) or not isinstance(kind, str):
        return bad_request("account_id and kind are required strings")
    if isinstance(times, bool) or not isinstance(times, int):
        return bad_request("times must be an integer", param="times")
    if isinstance(stall, bool) or not isinstance(stall, int | float):
        return bad_request("stall_seconds must be a number", param="stall_seconds")
    try:
        fault = state.arm_fault(key, kind, times, float(stall))
    except ValueError as exc:
        return bad_request(str(exc))
    account = state.find_account(key)
    assert account is not None
    return {"account_id": account.account_id, "kind": fault.kind, "times": fault.remaining}


def set_usage(state: EmulatorState, body: dict[str, Any], now: float) -> dict[str, Any] | Rejection:
    key = body.get("account_id")
    account = state.find_account(key) if isinstance(key, str) else None
    if account is None:
        return bad_request(f"unknown account {key!r}", param="account_id")
    values = [body.get("primary_used_percent"), body.get("secondary_used_percent")]
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return bad_request("used percentages must be numbers")
    state.set_usage(account, values[0], values[1], now)
    return next(a for a in state.accounts_view(now) if a["account_id"] == account.account_id)


def _read_view(state: EmulatorState, name: str, now: float) -> dict[str, Any]:
    if name == "faults":
        return {"faults": state.faults.pending()}
    if name == "requests":
        return {"requests": list(state.requests)}
    return {"accounts": state.accounts_view(now)}


async def handle_control(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    now, method, name = time.time(), scope["method"], scope["path"].removeprefix(PREFIX)
    routes = {
        "faults": ("GET", "POST"),
        "requests": ("GET",),
        "reset": ("POST",),
        "accounts": ("GET",),
        "usage": ("POST",),
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
    result = arm_fault(state, body) if name == "faults" else set_usage(state, body, now)
    if isinstance(result, Rejection):
        return await send_rejection(send, result)
    await send_json(send, 200, result)
