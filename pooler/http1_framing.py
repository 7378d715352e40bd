"""Strict HTTP/1.1 request framing for the server's h11 connections (RFC 9112, DESIGN §8).

Users put the gateway behind proxies, and a request that the proxy and the gateway frame
differently smuggles a second request past the proxy. h11 0.16 reads requests leniently:
it takes a bare LF as a line ending, unfolds obs-fold continuation lines, and frames a
request carrying both Content-Length and Transfer-Encoding as chunked and keeps the
connection open. Hypercorn (0.18) gives an application no say before h11 has framed the
request, so its h11 connection is replaced by `StrictServerConnection`, which refuses
those shapes; h11 then reports a protocol error, and Hypercorn answers 400 with
`connection: close` and closes (its error answer gets an OpenAI-shaped body here too). A
response that starts before its request's body has all arrived says `connection: close`
too, since Hypercorn closes such a connection.
h11 itself already refuses conflicting or invalid Content-Length values (400) and any
Transfer-Encoding other than exactly `chunked` (501). Only the server side is changed:
the gateway's own HTTP/1 client and any other h11 user in the process read as before.

This reaches into h11's and Hypercorn's internals (the receive buffer's bytes, the
connection's event extraction and reader, the headers' stored triples, the protocol's error
answer), as of h11 0.16 and Hypercorn
0.18: `strict_request_framing` refuses to start if one has moved, and
tests/hostile/test_http_framing.py checks the behaviour. The connection reads a request's
header lines with pooler.request_head, the same reading as h11's in one regex match.
"""

from __future__ import annotations

from typing import Any

import h11
from h11._readers import maybe_read_from_IDLE_client
from h11._receivebuffer import ReceiveBuffer, blank_line_regex

from pooler.dependency_shape import refuse_if_moved
from pooler.errors import BadRequest
from pooler.request_head import check_request_reader, read_request

# What Hypercorn answers for each status h11 hints at, as (code, message).
_REFUSALS: dict[int, tuple[str, str]] = {
    400: (
        "malformed_http_request",
        "The request is not well-formed HTTP/1.1 (RFC 9112): lines end in CRLF, headers are"
        " not folded, and a request has at most one of Content-Length and Transfer-Encoding."
        " The connection is closed.",
    ),
    431: ("request_header_fields_too_large", "The request head is too large."),
    501: (
        "unsupported_transfer_encoding",
        "Only `Transfer-Encoding: chunked` is supported. The connection is closed.",
    ),
}


def _refuse(reason: str) -> h11.LocalProtocolError:
    # h11 turns this into a RemoteProtocolError for the reader and marks the peer in error.
    return h11.LocalProtocolError(reason, error_status_hint=400)


def check_head_block(data: bytearray, end: int) -> None:
    """Refuse `data[:end]`, a complete head or trailer section ending in its blank line,
    unless every line ends in CRLF with no other CR or LF and no line is folded."""
    crlf = data.count(b"\r\n", 0, end)
    if data.count(b"\n", 0, end) != crlf or data.count(b"\r", 0, end) != crlf:
        raise _refuse("line endings other than CRLF")
    if data.find(b"\n ", 0, end) != -1 or data.find(b"\n\t", 0, end) != -1:
        raise _refuse("obsolete line folding")


class StrictReceiveBuffer(ReceiveBuffer):
    """h11's receive buffer, checking each head (request head, chunked trailers) in its raw
    form before h11 splits it into lines and forgets how they ended."""

    def maybe_extract_lines(self) -> list[bytearray] | None:
        data = self._data
        if data[:1] == b"\n":  # h11 reads a lone LF as an empty line
            raise _refuse("line endings other than CRLF")
        if data[:2] != b"\r\n":
            # The same search h11 makes, from where it left off: each byte is scanned once.
            match = blank_line_regex.search(data, self._multiple_lines_search)
            if match is None:
                self._multiple_lines_search = max(0, len(data) - 2)
                return None
            check_head_block(data, match.end())
        return super().maybe_extract_lines()


def check_request_framing(request: h11.Request) -> None:
    """Refuse a request whose body length a proxy could read differently (RFC 9112 §6.1,
    §6.3): Content-Length beside Transfer-Encoding, or Transfer-Encoding in HTTP/1.0."""
    has_length = has_coding = False
    # h11's (raw name, lowercased name, value) triples: iterating `request.headers` itself
    # costs a Python call per header (`Sequence.__iter__` and `Headers.__getitem__`).
    for _, name, _ in request.headers._full_items:
        if name == b"content-length":
            has_length = True
        elif name == b"transfer-encoding":
            has_coding = True
    if has_coding and (has_length or request.http_version != b"1.1"):
        raise _refuse("ambiguous message framing")


class StrictServerConnection(h11.Connection):
    """A server-side h11 connection that reads requests strictly (see the module doc)."""

    def __init__(self, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._receive_buffer = StrictReceiveBuffer()

    def send(self, event: Any) -> bytes | None:  # type: ignore[override]
        # Hypercorn closes the connection after a response that ended before the request's
        # body did (a 401, 413 or 408 answered without reading it all), without saying so:
        # a client that finished sending would reuse the connection and lose its next
        # request. Such a response says `connection: close` (RFC 9112 §9.6).
        if type(event) is h11.Response and self.their_state is not h11.DONE:
            event = closing(event)
        sent: bytes | None = super().send(event)
        return sent

    def _extract_next_receive_event(self) -> Any:
        # Called inside next_event's error handling: a refusal here puts the peer in ERROR
        # and reaches Hypercorn as a RemoteProtocolError, like h11's own refusals.
        if self._reader is maybe_read_from_IDLE_client:  # set again at each state change
            self._reader = read_request  # the same reading, cheaper (pooler.request_head)
        event = super()._extract_next_receive_event()
        if type(event) is h11.Request:
            check_request_framing(event)
        return event


def closing(response: h11.Response) -> h11.Response:
    """`response` with `connection: close` among its headers."""
    headers = list(response.headers)
    if any(name == b"connection" and b"close" in value.lower() for name, value in headers):
        return response
    return h11.Response(
        status_code=response.status_code,
        headers=[*headers, (b"connection", b"close")],
        reason=response.reason,
    )


def refusal(status: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and OpenAI-shaped body of the answer to a request h11 refused."""
    code, message = _REFUSALS.get(
        status, ("malformed_http_request", "The request is not well-formed HTTP/1.1.")
    )
    body = BadRequest(message, code=code).body_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


def strict_request_framing() -> None:
    """Make Hypercorn's HTTP/1.1 protocol read requests through `StrictServerConnection`
    and answer a refused request with an OpenAI-shaped body. Idempotent."""
    from hypercorn.events import RawData
    from hypercorn.protocol import h11 as h11_protocol

    protocol = h11_protocol.H11Protocol
    init = protocol.__init__
    if getattr(init, "_strict_framing", False):
        return
    # An override of a name that has moved would be silently skipped: fail instead.
    internals = (
        (h11.Connection, "_extract_next_receive_event"),
        (h11.Connection(h11.SERVER), "_receive_buffer"),
        (ReceiveBuffer(), "_multiple_lines_search"),
        (ReceiveBuffer(), "_data"),
        (h11.Request(method="GET", target="/", headers=[("host", "x")]).headers, "_full_items"),
        (h11.Connection(h11.SERVER), "_reader"),
        (protocol, "_send_error_response"),
    )
    missing = [name for owner, name in internals if not hasattr(owner, name)]
    refuse_if_moved(missing, "h11 or Hypercorn", "pooler.http1_framing")
    check_request_reader()

    def init_strict(self: h11_protocol.H11Protocol, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.connection = StrictServerConnection(self.config.h11_max_incomplete_size)

    async def send_error_response(self: h11_protocol.H11Protocol, status_code: int) -> None:
        # Built whole before the one send: the application may be answering the same
        # request concurrently (a trailer can be refused after its head was dispatched).
        headers, body = refusal(status_code)
        headers.extend(self.config.response_headers("h11"))
        events = (h11.Response(status_code=status_code, headers=headers), h11.Data(data=body))
        data = bytearray()
        try:
            for event in (*events, h11.EndOfMessage()):
                data += self.connection.send(event)
        except h11.LocalProtocolError:  # as Hypercorn's: only once the peer is in error
            if self.connection.their_state != h11.ERROR:
                raise
        if data:
            await self.send(RawData(data=bytes(data)))

    init_strict._strict_framing = True  # type: ignore[attr-defined]
    protocol.__init__ = init_strict  # type: ignore[method-assign]
    protocol._send_error_response = send_error_response  # type: ignore[method-assign]
