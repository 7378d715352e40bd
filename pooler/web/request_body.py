"""Reading a request body: its deadline, its size on the wire, and bounded decoding.

Every route that reads a body does it in one order (DESIGN §8): authenticate, take an
admission slot, read the body under its deadline, decode it within bounds, parse. The slot
comes first so that the bodies being read and decoded at once are bounded by a bulkhead; a
slow body keeps its slot until its deadline (`body_read_timeout_seconds`) fires, and is then
answered 408 with its connection closed (the rest of it is never read).

A zstd body is decoded as a stream that stops as soon as its output passes
`max_decompressed_body_bytes` or `max_decompression_ratio` times the compressed size: a
2 KB bomb costs at most ~400 KB before its 413, never the 60 MiB it would decode to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
import zstandard

from pooler.errors import BadRequest, BodyTooLarge, RequestTimeout, UnsupportedMediaType
from pooler.web.asgi import Scope, header

if TYPE_CHECKING:
    from quart.datastructures import FileStorage
    from werkzeug.datastructures import MultiDict

    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest, PulledBody

# The route class of the Responses-shaped routes while they read, decode and parse a body
# (whether they will stream, and so their class for the rest, is in the body).
BODY = "body"

# The first read of a decoded body asks for this many times the compressed size (typical
# JSON compresses 5 to 15 times), then doubles: most bodies decode in one read without
# reserving the whole bound up front.
FIRST_READ_FACTOR = 16
MIN_READ = 64 * 1024


async def read_body(body: PulledBody, limit: int, timeout_s: float) -> bytes:
    """The whole body as sent; BodyTooLarge past `limit` bytes, RequestTimeout when it has
    not all arrived within `timeout_s`."""
    body.limit = limit
    with trio.move_on_after(timeout_s):
        return await body.read()
    raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} seconds")


def decode_content(
    body: bytes, encoding: bytes | None, max_decoded: int, max_ratio: float
) -> bytes:
    """`body` decoded per its Content-Encoding (identity or zstd), refused with
    BodyTooLarge as soon as the output passes `max_decoded` bytes or `max_ratio` times the
    compressed size."""
    if not encoding or encoding.lower() == b"identity":
        return body
    if encoding.lower() != b"zstd":
        raise BadRequest(
            f"unsupported Content-Encoding {encoding.decode('latin-1')!r} (only zstd)",
            code="unsupported_content_encoding",
        )
    by_ratio = int(len(body) * max_ratio)
    bound = min(max_decoded, by_ratio)
    try:
        out = _bounded_zstd(body, bound)
    except zstandard.ZstdError as exc:
        raise BadRequest("the zstd request body could not be decoded", code="invalid_body") from exc
    if out is None:
        if by_ratio < max_decoded:
            raise BodyTooLarge(
                f"the request body decompresses to more than {max_ratio:g} times its size"
            )
        raise BodyTooLarge(f"decoded request body is larger than {max_decoded} bytes")
    return out


def _bounded_zstd(body: bytes, bound: int) -> bytes | None:
    """The decoded frames of `body`, or None as soon as they pass `bound` bytes."""
    reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
    parts: list[bytes] = []
    total = 0
    ask = max(MIN_READ, FIRST_READ_FACTOR * len(body))
    while True:
        chunk = reader.read(min(ask, bound + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if total > bound:
            return None
        ask = max(ask, total)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_raw_body(gw: Gateway, request: GatewayRequest, limit: int | None = None) -> bytes:
    """The body as sent, under the instance's deadline and `limit` (default: the gateway's
    `max_body_bytes`). Call it holding an admission slot."""
    bound = gw.settings.max_body_bytes if limit is None else limit
    timeout_s = gw.instance_settings.body_read_timeout_seconds
    return await read_body(request.body, bound, timeout_s)


async def read_decoded_body(gw: Gateway, request: GatewayRequest) -> bytes:
    """The body as sent, then decoded within the instance's bounds. Call it holding an
    admission slot."""
    body = await read_raw_body(gw, request)
    instance = gw.instance_settings
    return decode_content(
        body,
        header(request.scope, b"content-encoding"),
        instance.max_decompressed_body_bytes,
        instance.max_decompression_ratio,
    )


def check_content_type(scope: Scope) -> None:
    content_type = header(scope, b"content-type")
    if content_type is None or not content_type.split(b";")[0].strip().lower().endswith(b"json"):
        raise UnsupportedMediaType("Content-Type must be application/json")


async def read_json_body(gw: Gateway, request: GatewayRequest) -> bytes:
    """A JSON request body, size-bounded and decompressed (zstd) as the client sent it.
    Call it holding a `body` admission slot."""
    check_content_type(request.scope)
    return await read_decoded_body(gw, request)


async def read_form(
    gw: Gateway, request: GatewayRequest, limit: int | None = None
) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
    """A `multipart/form-data` body parsed by Quart (fields, files), under the instance's
    deadline and `limit` (default: `max_body_bytes`). Call it holding an admission slot.
    A body Quart cannot parse yields no parts: the route names the part it misses."""
    await read_raw_body(gw, request, limit)  # parsed whole: see PulledBody.read
    return await request.form, await request.files
