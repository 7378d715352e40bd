"""ASGI 3 types and the few send/receive helpers the emulator's handlers share."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pooler.emulator.rejections import Headers, Rejection

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = (b"content-type", b"application/json")


def request_headers(scope: Scope) -> dict[bytes, str]:
    """Request headers by lower-case name (the last of repeated ones wins)."""
    return {name.lower(): value.decode("latin-1") for name, value in scope["headers"]}


def query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, payload: Any, headers: Headers | None = None) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send_bytes(send, status, body, [JSON, *(headers or [])])


async def send_rejection(send: Send, rejection: Rejection, headers: Headers | None = None) -> None:
    extra = [*rejection.headers, *(headers or [])]
    await send_bytes(send, rejection.status, rejection.body(), [JSON, *extra])


async def deny_websocket(send: Send, rejection: Rejection) -> None:
    """Refuse a websocket handshake with an HTTP answer (ASGI websocket.http.response)."""
    body = rejection.body()
    headers = [JSON, *rejection.headers, (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "websocket.http.response.start", "status": rejection.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
