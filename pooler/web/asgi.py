"""Small ASGI helpers: header lookups on a scope, and the answers a relay pushes through
the server's `send` (pooler/web/quart_http.py says why relays push) or a websocket
handshake refuses with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from pooler.errors import PoolerError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientDisconnected(Exception):
    """The client went away while we were reading its request."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def headers_dict(scope: Scope, names: Iterable[bytes]) -> dict[bytes, bytes]:
    wanted = set(names)
    found: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        if key in wanted and key not in found:
            found[key] = bytes(value)
    return found


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> int:
    """Answer with `payload` as JSON; the body's size (as every answer here: for the log)."""
    body = orjson.dumps(payload)
    return await send_bytes(send, status, body, [*JSON_HEADERS, *headers])


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return len(body)


async def send_error(
    send: Send, error: PoolerError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> int:
    return await send_bytes(
        send, error.status, error.body_bytes(), [*error.headers(), *extra_headers]
    )
