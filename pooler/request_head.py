"""A request head's header lines checked with one regex match, not one per line, for the
server's h11 connections.

h11 (0.16) reads a request head by matching each header line with its `header_field`
regex (through a generator for obs-fold and a `validate` call per line): for the dozen
headers a Codex request carries, that is most of the ~30 µs h11 spends reading its head
(ops/bench/server_parse_cost.py measures the whole server path). `read_request` is h11's
`maybe_read_from_IDLE_client` with that step done as one `fullmatch` of the same pattern,
repeated with CRLF between lines, over the lines joined back:

- h11's pattern cannot match a CR or an LF (its field name is a token, its value is made
  of `[^\\x00\\s]` runs separated by spaces or tabs), so the joined lines match it only if
  every line does on its own, and then each line's name is what precedes its first colon
  and its value the rest without the spaces and tabs around it: exactly the pattern's
  groups;
- a folded line (which h11 would join to the one above) starts with a space or a tab, so
  the whole match fails;
- when the match fails, h11's own per-line reading runs on the same lines and refuses (or
  reads) them exactly as before, with the same error.

So the `h11.Request` (built by h11, which checks it as before) and every refusal are
unchanged. This relies on h11's `maybe_read_from_IDLE_client`, `_decode_header_lines`,
`header_field_re` and `READERS` as of h11 0.16: `check_request_reader` refuses to start if
one has moved or if a sample of heads reads differently, and tests/unit/test_request_head.py
compares the two readers over honest and malformed heads.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import h11
from h11._readers import (
    READERS,
    _decode_header_lines,
    header_field_re,
    maybe_read_from_IDLE_client,
    request_line_re,
)
from h11._receivebuffer import ReceiveBuffer
from h11._util import validate

from pooler.dependency_shape import missing_texts, refuse_if_moved

# h11's per-line pattern (its groups unnamed, to repeat it), for a block of lines separated
# by CRLF, the last without one.
_line = header_field_re.pattern.replace(b"(?P<field_name>", b"(").replace(b"(?P<field_value>", b"(")
_header_block_re = re.compile(b"(?:%s)(?:\r\n(?:%s))*" % (_line, _line))


def header_lines(lines: list[bytearray]) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a head's header lines, as h11's `_decode_header_lines`
    reads them (its refusal, the same, when one is malformed)."""
    if not lines:
        return []
    block = b"\r\n".join(lines)
    if _header_block_re.fullmatch(block) is None:
        return list(_decode_header_lines(lines))  # type: ignore[arg-type]  # as h11 calls it
    pairs = []
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        pairs.append((name, value.strip(b" \t")))
    return pairs


def read_request(buf: ReceiveBuffer) -> h11.Request | None:
    """h11's `maybe_read_from_IDLE_client`, reading the header lines with `header_lines`."""
    lines = buf.maybe_extract_lines()
    if lines is None:
        if buf.is_next_line_obviously_invalid_request_line():
            raise h11.LocalProtocolError("illegal request line")
        return None
    if not lines:
        raise h11.LocalProtocolError("no request line received")
    line = lines[0]
    matches = validate(request_line_re, line, "illegal request line: {!r}", line)  # type: ignore[arg-type]
    return h11.Request(headers=header_lines(lines[1:]), _parsed=True, **matches)


_SAMPLES = (
    b"POST /v1/responses?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"X-Empty:\r\nX-Ows: \t a\tb \t\r\nUser-Agent: codex (x; y) \xe9\r\n\r\n{}",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
)


def _read(reader: Callable[[ReceiveBuffer], object], data: bytes) -> object:
    buf = ReceiveBuffer()
    buf += data
    try:
        event = reader(buf)
    except h11.LocalProtocolError as error:
        return ("refused", str(error), error.error_status_hint)
    if not isinstance(event, h11.Request):
        return event
    return (event.method, event.target, event.http_version, event.headers.raw_items())


def check_request_reader() -> None:
    """Refuse to start if h11 moved what `read_request` stands in for (see the module doc)."""
    expected = (
        "buf.maybe_extract_lines()",
        "validate(\n        request_line_re",
        "headers=list(_decode_header_lines(lines[1:])), _parsed=True, **matches",
    )
    missing = missing_texts({maybe_read_from_IDLE_client: expected})
    if READERS.get((h11.CLIENT, h11.IDLE)) is not maybe_read_from_IDLE_client:
        missing.append("READERS[(CLIENT, IDLE)]")
    for data in _SAMPLES:
        if _read(read_request, data) != _read(maybe_read_from_IDLE_client, data):
            missing.append(f"the same reading of {data[:40]!r}")
    refuse_if_moved(missing, "h11", "pooler.request_head")
