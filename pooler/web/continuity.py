"""A request's continuity keys (DESIGN §4): what pins its conversation to an account.

The hard key is `previous_response_id` (the upstream holds that response), else the first
`input_file` naming a `file_id` (a file lives on the account that created it). The soft
keys, strongest first: `prompt_cache_key`, a session header, `thread-id`,
`x-client-request-id`, `x-codex-turn-state`. Digests only: the values are never kept.
"""

from __future__ import annotations

from typing import Any

from pooler.web.asgi import Scope, header
from pooler.web.leasing import continuity_digest

SESSION_HEADERS = (b"session-id", b"session_id", b"x-codex-window-id")
LATER_CONTINUITY_HEADERS = (
    (b"thread-id", "thread"),
    (b"x-client-request-id", "client_request"),
    (b"x-codex-turn-state", "turn_state"),
)


def continuity_keys(
    payload: dict[str, Any], scope: Scope
) -> tuple[bytes | None, tuple[bytes, ...]]:
    """The hard key, if any, and the soft keys, strongest first."""
    previous = payload.get("previous_response_id")
    hard = (
        response_key(previous)
        if isinstance(previous, str) and previous
        else input_file_key(payload)
    )
    keys: list[bytes] = []
    cache_key = payload.get("prompt_cache_key")
    if isinstance(cache_key, str) and cache_key:
        keys.append(continuity_digest("prompt_cache_key", cache_key))
    for name in SESSION_HEADERS:
        value = header(scope, name)
        if value:
            keys.append(continuity_digest("session", value.decode("latin-1")))
            break
    for name, kind in LATER_CONTINUITY_HEADERS:
        value = header(scope, name)
        if value:
            keys.append(continuity_digest(kind, value.decode("latin-1")))
    return hard, tuple(keys)


def response_key(response_id: str) -> bytes:
    """The hard key of a response id (pinned as soon as the upstream names it)."""
    return continuity_digest("response_id", response_id)


def file_key(file_id: str) -> bytes:
    """The hard key of an uploaded file (pinned when the file is created)."""
    return continuity_digest("file", file_id)


def input_file_key(payload: dict[str, Any]) -> bytes | None:
    """A file uploaded through one account is usable on that account only: the first
    `input_file` part naming a `file_id` pins the request there."""
    items = payload.get("input")
    for item in items if isinstance(items, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "input_file":
                file_id = part.get("file_id")
                if isinstance(file_id, str) and file_id:
                    return file_key(file_id)
    return None
