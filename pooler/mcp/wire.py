"""What `/mcp` checks on a request's head before anything else runs, and how it refuses:
a JSON-RPC 2.0 error body (`id` null) with the HTTP status the MCP transport names.

Checked in this order, all on headers only (pure, no I/O): the method (POST; OPTIONS is
answered; GET and DELETE get 405, as a stateless server may), the Host (DNS-rebinding: one
of the operator's `mcp.allowed_hosts`, 421), the Origin (absent, or this very Host: 403),
a compressed body (415), the content type (JSON: 415), the Accept header (JSON and
event-stream both: 406), a declared body over the limit (413), and a token in the query
string (401: tokens travel in the Authorization header only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import orjson

MAX_BODY_BYTES: Final = 1024 * 1024
ALLOW: Final = (b"allow", b"POST, OPTIONS")

# JSON-RPC 2.0 codes (and the MCP reference's -32000 for gates and auth).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
INVALID_PARAMS: Final = -32602
SERVER_ERROR: Final = -32000

QUERY_TOKEN_NAMES: Final = frozenset({"token", "access_token", "api_key", "key", "bearer"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer refusing a request: a JSON-RPC error with an HTTP status."""

    status: int
    message: str
    code: int = SERVER_ERROR
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message}
        return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error})

    def all_headers(self) -> list[tuple[bytes, bytes]]:
        body = self.body()
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *self.headers,
        ]


def head_refusal(
    method: str,
    headers: Mapping[bytes, bytes],
    query_string: bytes,
    allowed_hosts: Iterable[str],
) -> Refusal | None:
    """Why the request's head is refused, or None (`headers`: lower-case names, the first
    value of each)."""
    if method != "POST":
        return Refusal(
            405, f"{method} is not served on /mcp (stateless: POST only)", headers=(ALLOW,)
        )
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if not host_allowed(host, allowed_hosts):
        return Refusal(
            421, "this Host is not one /mcp answers to (instance setting mcp.allowed_hosts)"
        )
    origin = headers.get(b"origin")
    if origin is not None and not same_origin(origin.decode("latin-1"), host):
        return Refusal(403, "requests from another origin are refused")
    encoding = headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding not in (b"", b"identity"):
        return Refusal(415, "compressed request bodies are not accepted on /mcp")
    if media_type(headers.get(b"content-type", b"")) != "application/json":
        return Refusal(415, "Content-Type must be application/json")
    if not accepts_json_and_sse(headers.get(b"accept", b"")):
        return Refusal(406, "Accept must include both application/json and text/event-stream")
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return Refusal(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if any(name.lower() in QUERY_TOKEN_NAMES for name, _ in _query(query_string)):
        return Refusal(
            401,
            "a token in the query string is not accepted: send Authorization: Bearer <MCP token>",
            headers=((b"www-authenticate", b'Bearer realm="mcp"'),),
        )
    return None


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """`host` (`name[:port]`, lower case) is one of `allowed` (`name` for any port, or
    `name:port` exactly, or `*`)."""
    if not host:
        return False
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        end = host.find("]")
        name = host[: end + 1] if end > 0 else host
    else:
        name = host.split(":", 1)[0]
    return any(entry in ("*", host, name) for entry in allowed)


def same_origin(origin: str, host: str) -> bool:
    """An Origin of this very server: http(s) and the Host the request was sent to."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host and bool(host)


def media_type(value: bytes) -> str:
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def accepts_json_and_sse(value: bytes) -> bool:
    types = {media_type(part) for part in value.split(b",")}
    json = bool(types & {"application/json", "application/*", "*/*"})
    sse = bool(types & {"text/event-stream", "text/*", "*/*"})
    return json and sse


def _query(query_string: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)[:64]
    except ValueError:
        return []
