"""Reading HTTP/1.1 requests from a connection's received bytes: pure framing, no I/O.

`RequestReader` reads what Hypercorn's h11 connection read for the server, with the
gateway's strict framing (RFC 9112, DESIGN §8), and refuses what it refused with the same
status:

- a head is complete at its blank line; every line ends in CRLF with no other CR or LF
  and none is folded (400); its request line and header lines match h11's own grammar
  (copied from `h11._abnf`: the request line, each header line a token, a colon and a value
  of `[^\\x00\\s]` runs) (400); an HTTP/1.1 request has exactly one Host header (400);
- Content-Length is digits (at most 20), the same in every header and list item (400);
  Transfer-Encoding is exactly one `chunked` (501), never beside Content-Length nor in
  HTTP/1.0 (400);
- a head still incomplete when the buffer holds more than `max_incomplete` bytes (16 KiB
  here) is refused with 431, as h11 does (a complete head is not measured, nor was it);
  a first byte that cannot start a request line (below 0x21) is refused at once (400);
- a chunked body's chunk header lines follow h11's pattern, each chunk ends in CRLF, and
  its trailer section is checked as a head is (and then dropped, as Hypercorn did).

A whole head is checked with a handful of C-level regex and byte operations, not a
Python call per header line. tests/unit/test_http_server.py compares every answer with
the one Hypercorn's H11Protocol gave with the gateway's strict h11 wrappers, over honest and
malformed input, and test_the_grammar_is_h11s with h11's own patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# h11 0.16's grammar (`h11._abnf`, RFC 7230), copied so that the server reads as h11 read:
# a token, a header line (name, colon, optional spaces or tabs, a value of `[^\x00\s]` runs
# separated by spaces or tabs, optional spaces or tabs), the request line, a chunk header.
TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
HEADER_LINE = TOKEN + r":[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
_REQUEST_LINE = re.compile(
    rb"(?P<method>" + TOKEN.encode() + rb") (?P<target>[\x21-\x7e]+) "
    rb"HTTP/(?P<http_version>[0-9]\.[0-9])"
)
_CHUNK_HEADER = re.compile(rb"(?P<chunk_size>[0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
# A block of header lines separated by CRLF: a line cannot match a CR or an LF, so the block
# matches only if every line does.
_HEADER_BLOCK = re.compile(f"(?:{HEADER_LINE})(?:\r\n(?:{HEADER_LINE}))*".encode())
# Once the block matched: each line's name and its value without the spaces and tabs
# around it (the value's last character is not a space or a tab).
_PAIRS = re.compile(rb"([^:\r\n]+):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*(?:\r\n|$)")
_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a head (strictness refuses bare LFs)
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,20}")
# Header names the reader looks at (everything else only passes through).
_FRAMING = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"expect", b"host", b"upgrade")
)

NEED_DATA = None


class Refused(Exception):
    """A request the server refuses: answered with `status` and closed."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class EndOfBody:
    """The request's body is complete."""


END = EndOfBody()


@dataclass(slots=True)
class Head:
    """A request's head as the server reads it."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]  # (lowercased name, value), as Hypercorn passes them
    keep_alive: bool
    expects_100: bool
    chunked: bool
    length: int  # a Content-Length body's (0 when there is none)
    upgrade: bytes  # the last Upgrade header's value, b"" when none
    connection: bytes  # the last Connection header's value, b"" when none
    has_upgrade: bool  # any Upgrade header (h11: a protocol switch proposal)
    has_body_header: bool  # any Content-Length or Transfer-Encoding header


def check_head_block(data: bytes | bytearray, end: int) -> None:
    """Refuse `data[:end]`, a complete head or trailer section ending in its blank line,
    unless every line ends in CRLF with no other CR or LF and no line is folded."""
    crlf = data.count(b"\r\n", 0, end)
    if data.count(b"\n", 0, end) != crlf or data.count(b"\r", 0, end) != crlf:
        raise Refused("line endings other than CRLF")
    if data.find(b"\n ", 0, end) != -1 or data.find(b"\n\t", 0, end) != -1:
        raise Refused("obsolete line folding")


def header_pairs(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a block of header lines (no final CRLF), refused (400)
    unless each line is one h11 reads."""
    if not block:
        return []
    if _HEADER_BLOCK.fullmatch(block) is None:
        raise Refused("illegal header line")
    return _PAIRS.findall(block)


def comma_values(value: bytes) -> list[bytes]:
    """A comma-separated header value's items, stripped and lowercased, empty ones dropped
    (h11's `get_comma_header` for one header)."""
    return [item for item in (part.strip().lower() for part in value.split(b",")) if item]


def parse_head(head: bytes) -> Head:
    """A request head (its lines, without the blank line's CRLF CRLF) read, or refused."""
    line_end = head.find(b"\r\n")
    first, block = (head, b"") if line_end == -1 else (head[:line_end], head[line_end + 2 :])
    match = _REQUEST_LINE.fullmatch(first)
    if match is None:
        raise Refused("illegal request line")
    method, target, version = match.group("method", "target", "http_version")
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    length: bytes | None = None
    chunked = False
    keep_alive = version >= b"1.1"
    expects_100 = False
    upgrade = connection = b""
    has_upgrade = False
    for raw_name, value in header_pairs(block):
        name = raw_name.lower()
        if name in _FRAMING:
            if name == b"content-length":
                lengths = {item.strip() for item in value.split(b",")}
                if len(lengths) != 1:
                    raise Refused("conflicting Content-Length headers")
                value = lengths.pop()
                if _CONTENT_LENGTH.fullmatch(value) is None:
                    raise Refused("bad Content-Length")
                if length is not None:
                    if value != length:
                        raise Refused("conflicting Content-Length headers")
                    continue  # h11 keeps the first of equal ones
                length = value
            elif name == b"transfer-encoding":
                if chunked:
                    raise Refused("multiple Transfer-Encoding headers", 501)
                value = value.lower()
                if value != b"chunked":
                    raise Refused("Only Transfer-Encoding: chunked is supported", 501)
                chunked = True
            elif name == b"host":
                hosts += 1
            elif name == b"connection":
                connection = value
                if b"close" in comma_values(value):
                    keep_alive = False
            elif name == b"expect":
                if b"100-continue" in comma_values(value):
                    expects_100 = True
            else:  # upgrade
                upgrade = value
                if comma_values(value):
                    has_upgrade = True
        headers.append((name, value))
    if version == b"1.1" and hosts == 0:
        raise Refused("Missing mandatory Host: header")
    if hosts > 1:
        raise Refused("Found multiple Host: headers")
    if chunked and (length is not None or version != b"1.1"):
        raise Refused("ambiguous message framing")
    return Head(
        method=method,
        target=target,
        http_version=version,
        headers=headers,
        keep_alive=keep_alive,
        expects_100=expects_100 and version >= b"1.1",
        chunked=chunked,
        length=0 if length is None else int(length),
        upgrade=upgrade,
        connection=connection,
        has_upgrade=has_upgrade,
        has_body_header=chunked or length is not None,
    )


class RequestReader:
    """One connection's received bytes, read into request heads and body pieces."""

    __slots__ = ("_chunk_state", "_chunked", "_remaining", "_search", "buffer", "max_incomplete")

    def __init__(self, max_incomplete: int) -> None:
        self.buffer = bytearray()
        self.max_incomplete = max_incomplete
        self._search = 0  # where the next search for a head's end starts
        self._remaining = 0  # bytes left in the Content-Length body or the current chunk
        self._chunked = False
        # In a chunked body: 0 a chunk header is next, 1 in a chunk's data, 2 its CRLF,
        # 3 the trailer section.
        self._chunk_state = 0

    def too_long(self) -> bool:
        """Whether what waits to be completed is over the limit (h11's 431 check)."""
        return len(self.buffer) > self.max_incomplete

    def read_head(self) -> Head | None:
        """The next request's head, None until it is complete; refused if malformed."""
        buffer = self.buffer
        if not buffer:
            return None
        if buffer[0] < 0x21:
            raise Refused("illegal request line")
        match = _HEAD_END.search(buffer, self._search)
        if match is None:
            self._search = max(0, len(buffer) - 2)
            if len(buffer) > self.max_incomplete:
                raise Refused("Receive buffer too long", 431)
            return None
        end = match.end()
        check_head_block(buffer, end)
        head = parse_head(bytes(buffer[: end - 4]))
        del buffer[:end]
        self._search = 0
        self._chunked = head.chunked
        self._chunk_state = 0
        self._remaining = head.length
        return head

    def read_body(self) -> bytes | EndOfBody | None:
        """The next piece of the current request's body, END once it is complete, None
        until more bytes arrive; refused if its chunked framing is malformed."""
        if not self._chunked:
            if self._remaining == 0:
                return END
            buffer = self.buffer
            if not buffer:
                return None
            if len(buffer) <= self._remaining:
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[: self._remaining])
                del buffer[: self._remaining]
            self._remaining -= len(data)
            return data
        return self._read_chunked()

    def length_body_read(self) -> bool:
        """Whether a Content-Length body has been read whole (its END is next)."""
        return not self._chunked and self._remaining == 0

    def _read_chunked(self) -> bytes | EndOfBody | None:
        buffer = self.buffer
        while True:
            state = self._chunk_state
            if state == 1:
                if not buffer:
                    return None
                data = bytes(buffer[: self._remaining])
                del buffer[: len(data)]
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._chunk_state = 2
                return data
            if state == 2:
                if len(buffer) < 2:
                    if buffer and buffer[:1] != b"\r":
                        raise Refused("malformed chunk footer")
                    return None
                if buffer[:2] != b"\r\n":
                    raise Refused("malformed chunk footer")
                del buffer[:2]
                self._chunk_state = 0
                continue
            if state == 0:
                # From where the last search left off: each byte is scanned once.
                end = buffer.find(b"\r\n", max(0, self._search - 1))
                if end == -1:
                    self._search = len(buffer)
                    return None
                self._search = 0
                line = bytes(buffer[: end + 2])
                match = _CHUNK_HEADER.fullmatch(line)
                if match is None:
                    raise Refused("illegal chunk header")
                del buffer[: end + 2]
                size = int(match.group("chunk_size"), 16)
                if size == 0:
                    self._chunk_state = 3
                else:
                    self._remaining = size
                    self._chunk_state = 1
                continue
            # The trailer section: checked as a head, then dropped.
            if buffer[:2] == b"\r\n":
                del buffer[:2]
                return self._ended()
            if buffer[:1] == b"\n":
                raise Refused("line endings other than CRLF")
            match = _HEAD_END.search(buffer, self._search)
            if match is None:
                self._search = max(0, len(buffer) - 2)
                return None
            end = match.end()
            check_head_block(buffer, end)
            header_pairs(bytes(buffer[: end - 4]))
            del buffer[:end]
            self._search = 0
            return self._ended()

    def _ended(self) -> EndOfBody:
        self._chunked = False
        self._remaining = 0
        return END
