"""Small ASGI helpers for the runtime routes: headers, bodies, JSON answers.

The runtime routes are plain ASGI (no framework on the hot path): every microsecond there is
added latency for every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson
import zstandard

from pooler.errors import BadRequest, BodyTooLarge, PoolerError

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


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_content(body: bytes, encoding: bytes | None, limit: int) -> bytes:
    if not encoding or encoding.lower() == b"identity":
        return body
    if encoding.lower() != b"zstd":
        raise BadRequest(
            f"unsupported Content-Encoding {encoding.decode('latin-1')!r} (only zstd)",
            code="unsupported_content_encoding",
        )
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(body)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise BadRequest("the zstd request body could not be decoded", code="invalid_body") from exc
    if len(out) > limit:
        raise BodyTooLarge(f"decoded request body is larger than {limit} bytes")
    return out


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = orjson.dumps(payload)
    await send_bytes(send, status, body, [*JSON_HEADERS, *headers])


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, error: PoolerError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, error.status, error.body_bytes(), [*error.headers(), *extra_headers])
