"""Framing an HTTP/1.1 response as bytes: pure logic, no I/O.

`frame_response` makes a response head and chooses how its body is framed the way h11
(0.16) did for Hypercorn's server, so the bytes on the wire are the same:

- the status line is `HTTP/1.1 <code> ` (no reason phrase) and the headers go out as given,
  after checking each line is one h11 accepts (a token name, a value without CR, LF or NUL);
- a 204 or 304 answer, a HEAD request's, and a 2xx answer to CONNECT have no body (a HEAD
  answer's headers are a GET's);
- `Transfer-Encoding: chunked` frames the body in chunks; else a `Content-Length` (digits,
  one value) fixes its length; else the body has an unknown length: an HTTP/1.1 client
  gets it chunked (`Transfer-Encoding: chunked` is added, any Content-Length dropped), an
  HTTP/1.0 client (or one whose request was refused before its version was read) gets it
  unframed and the connection closes after it;
- when the connection will not be kept alive (the client said `Connection: close` or is
  HTTP/1.0, or the body is close-delimited), its Connection headers are replaced by
  `Connection: close` (other tokens kept, `keep-alive` dropped), one header per token;
- a response whose headers say `close` ends the connection after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pooler.http_server.request_reader import HEADER_LINE

_HEADER_BLOCK = re.compile(f"(?:{HEADER_LINE})(?:\r\n(?:{HEADER_LINE}))*".encode())
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,20}")

# How a body is framed.
LENGTH = 0  # a Content-Length body
CHUNKED = 1
UNFRAMED = 2  # close-delimited (HTTP/1.0)


class Unsendable(Exception):
    """The application asked for a response the connection cannot send (malformed headers,
    a body longer or shorter than its Content-Length, a second response)."""


@dataclass(slots=True)
class Framed:
    head: bytes
    body: int  # LENGTH, CHUNKED or UNFRAMED
    length: int  # a LENGTH body's
    keep_alive: bool  # whether the connection may serve another request after it
    declared_length: bool  # whether the application gave a Content-Length


def comma_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """h11's `get_comma_header`: the items of every `name` header, stripped, lowercased."""
    return [
        item
        for header, value in headers
        if header.lower() == name
        for item in (part.strip().lower() for part in value.split(b","))
        if item
    ]


def without(headers: list[tuple[bytes, bytes]], name: bytes) -> list[tuple[bytes, bytes]]:
    return [(header, value) for header, value in headers if header.lower() != name]


def head_bytes(status: int, headers: list[tuple[bytes, bytes]], has_host: bool = True) -> bytes:
    """A status line and header lines, as h11 writes them (a Host header first, looked for
    unless `has_host` is False)."""
    lines = b"\r\n".join([name + b": " + value for name, value in headers])
    # Each header one line (a CR or LF inside a name or value would add one), each line
    # one h11 accepts.
    if lines and (
        lines.count(b"\r\n") != len(headers) - 1 or _HEADER_BLOCK.fullmatch(lines) is None
    ):
        raise Unsendable("illegal header name or value")
    if has_host and any(name.lower() == b"host" for name, _ in headers):
        hosts = [(n, v) for n, v in headers if n.lower() == b"host"]
        headers = hosts + [(n, v) for n, v in headers if n.lower() != b"host"]
        lines = b"\r\n".join([name + b": " + value for name, value in headers])
    if lines:
        return b"HTTP/1.1 %d \r\n%b\r\n\r\n" % (status, lines)
    return b"HTTP/1.1 %d \r\n\r\n" % status


def informational(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A 1xx response's head."""
    return head_bytes(status, headers)


_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection", b"host"))


def _normalized(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], int | None, bool, bool, bool]:
    """h11's validation of framing headers: the headers (a repeated equal Content-Length
    kept once, Transfer-Encoding lowercased), the length if any, whether chunked, whether
    there is a Connection header, a Host header."""
    length: bytes | None = None
    chunked = has_connection = has_host = False
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _SPECIAL:
            out.append((name, value))
            continue
        if lowered == b"connection":
            has_connection = True
        elif lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            lengths = {item.strip() for item in value.split(b",")}
            value = lengths.pop()
            if lengths or _CONTENT_LENGTH.fullmatch(value) is None:
                raise Unsendable("bad Content-Length")
            if length is not None:
                if value != length:
                    raise Unsendable("conflicting Content-Length headers")
                continue
            length = value
        elif lowered == b"transfer-encoding":
            value = value.lower()
            if chunked or value != b"chunked":
                raise Unsendable("Only Transfer-Encoding: chunked is supported")
            chunked = True
        out.append((name, value))
    return out, None if length is None else int(length), chunked, has_connection, has_host


def frame_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    method: bytes | None,
    their_version: bytes | None,
    keep_alive: bool,
) -> Framed:
    """A final response's head and framing (see the module doc): `method` and
    `their_version` are the request's (None if it was refused before they were read),
    `keep_alive` whether the connection could still be kept alive."""
    headers, length, chunked, has_connection, has_host = _normalized(headers)
    if status in (204, 304) or (method == b"CONNECT" and 200 <= status < 300):
        body, size = LENGTH, 0  # a HEAD answer's headers are a GET's
    elif chunked:
        body, size = CHUNKED, 0
    elif length is not None:
        body, size = LENGTH, length
    else:
        body, size = UNFRAMED, 0
    need_close = False
    if body != LENGTH:
        headers = without(headers, b"content-length")
        if their_version is None or their_version < b"1.1":
            headers = without(headers, b"transfer-encoding")
            body = UNFRAMED
            if method != b"HEAD":
                need_close = True
        else:
            # h11 sets it anew (at the end) even when the application gave it.
            headers = [*without(headers, b"transfer-encoding"), (b"Transfer-Encoding", b"chunked")]
            body = CHUNKED
    if not keep_alive or need_close:
        has_connection = True
        tokens = set(comma_values(headers, b"connection"))
        tokens.discard(b"keep-alive")
        tokens.add(b"close")
        headers = [*without(headers, b"connection")] + [
            (b"Connection", token) for token in sorted(tokens)
        ]
    if need_close or (has_connection and b"close" in comma_values(headers, b"connection")):
        keep_alive = False
    if method == b"HEAD":
        body, size = LENGTH, 0
    return Framed(
        head=head_bytes(status, headers, has_host),
        body=body,
        length=size,
        keep_alive=keep_alive,
        declared_length=length is not None,
    )


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body (what h11's ChunkedWriter writes)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

BODY_FOLLOWS = "pooler.body_follows"
"""A key an application may set (True) in an `http.response.start` message whose body is
chunked (or close-delimited): it sends the body's first, non-empty piece right after the
start, with no wait between (it has it at hand). The server then holds the head, as it holds
a fixed-length one, and writes it with that piece: one write instead of two on the way to
a streamed answer's first byte. A start without it is written at once."""

WAIT_FOLLOWS = "pooler.wait_follows"
"""A key an application may set (True) in an `http.response.start` message when its next
step after the head is a wait of its own (a relay's wait for its upstream's first body
piece, which was not at hand): the server writes the head at once, as any unmarked head,
but WITHOUT the yield to the event loop a send makes after its bytes are written (a
cancellation is still checked before; a write that must wait is still stall-bounded), since
that wait is the schedule point: one loop turn fewer on the way to the first body byte.
Honoured where the server writes through `pooler.write_stall`; else an ordinary head."""

BODY_PIECES = "pooler.body_pieces"
"""The scope extension (`scope["extensions"][BODY_PIECES]`) under which the server's HTTP/1.1
protocol gives an application a `write(data)` coroutine function for a streamed answer's
body pieces, once its head is sent or held: the same as sending `{"type": "http.response.body",
"body": data, "more_body": True}`, but written straight to the connection (one chunk, one
send(2)) and WITHOUT the yield to the event loop a send makes after its bytes are written
(a cancellation is still checked before). For a writer whose next step is a wait of its
own (a relay's wait for the upstream's next read), which is then the schedule point: one
task step per relayed piece instead of two; a streamed head held for its first piece
(BODY_FOLLOWS) goes in the same write. Anything else (a body not chunked, a client gone)
goes the ordinary way."""
