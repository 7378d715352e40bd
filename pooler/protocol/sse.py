"""Incremental Server-Sent Events framing: bytes in, complete event blocks out (pure).

A block is everything up to and including the first blank line; `SSEDecoder.feed` returns
every block completed by the bytes fed so far, each with its exact `raw` bytes, so a relay
can forward events one for one, byte for byte, the moment each is complete. Every block is
returned, including comment-only or empty ones (`event is None` and `data == ""`), so the
`raw` of all events plus what `flush` returns always concatenates back to the input.

Lines end with LF, CRLF or CR. A CR that ends the buffered bytes could be half of a CRLF,
so a block whose end depends on it waits for the next byte (or `flush`); streams that use
LF or CRLF, such as the Codex backend, never wait. Fields: `event` (last one wins), `data`
(lines joined by LF); `id`, `retry` and unknown fields are ignored. The common case, no CR
in the chunk, is framed with `bytes.find` alone; CR streams walk line by line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "encode_sse"]

_LF = 10
_CR = 13
_COLON = 58


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes  # the block exactly as received, terminating blank line included
    event: str | None  # the `event:` field, None when absent or empty
    data_bytes: bytes  # the `data:` lines joined by b"\n", undecoded

    @property
    def data(self) -> str:
        return self.data_bytes.decode("utf-8", "replace")


class SSEDecoder:
    """Feed chunks as they arrive; get back the events they complete."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        # The start of an incomplete block (empty between blocks). Read-only for callers:
        # a reader with a fast path for whole blocks (stream accounting) checks it.
        self.held = bytearray()

    def feed(self, data: bytes) -> list[SSEEvent]:
        buf = self._take(data)
        if buf is None:
            return []
        events, used = _frame_lf(buf) if b"\r" not in buf else _frame_any(buf)
        self._keep(buf, used)
        return events

    def feed_data(self, data: bytes) -> list[bytes]:
        """`feed`, giving only each event's `data_bytes`: what a reader that ignores
        the other fields needs (stream accounting), without an `SSEEvent` per event."""
        buf = self._take(data)
        if buf is None:
            return []
        if b"\r" in buf:
            events, used = _frame_any(buf)
            found = [event.data_bytes for event in events]
        else:
            found, used = _data_lf(buf)
        self._keep(buf, used)
        return found

    def _take(self, data: bytes) -> bytes | None:
        """The bytes to frame now (the buffered start and `data`); None: no block ends."""
        if self.held:
            scan_from = max(0, len(self.held) - 2)
            self.held += data
            if not _may_end_block(self.held, scan_from):
                return None
            return bytes(self.held)
        return data or None

    def _keep(self, buf: bytes, used: int) -> None:
        if used < len(buf):
            self.held = bytearray(buf[used:])
        elif self.held:
            self.held.clear()

    def flush(self) -> list[SSEEvent]:
        """End of stream: the blocks still buffered; an unterminated rest comes last."""
        raw = bytes(self.held)
        self.held = bytearray()
        events, used = _frame_any(raw, final=True)
        if used < len(raw):
            events.append(_parse_block(raw[used:]))
        return events


def _may_end_block(buf: bytearray, start: int) -> bool:
    """Cheap test: could `buf` (bytes from `start` on are new) hold a blank line?"""
    return (
        buf[0] in (_LF, _CR)
        or buf.find(b"\n\n", start) >= 0
        or buf.find(b"\n\r", start) >= 0
        or buf.find(b"\r\r", start) >= 0
    )


def _frame_lf(buf: bytes) -> tuple[list[SSEEvent], int]:
    """Blocks of a buffer with no CR: each ends at the first b"\\n\\n" (or a lone LF)."""
    events = []
    pos = 0
    end = len(buf)
    while pos < end:
        if buf[pos] == _LF:
            stop = pos + 1
        else:
            found = buf.find(b"\n\n", pos)
            if found < 0:
                break
            stop = found + 2
        events.append(_parse_block(buf[pos:stop]))
        pos = stop
    return events, pos


def _data_lf(buf: bytes) -> tuple[list[bytes], int]:
    """`_frame_lf`, giving each block's data only. The Codex backend's every event is
    `event: NAME`, `data: VALUE`, a blank line: such a block's data is sliced out in
    place (what `_parse_block` would find); any other block goes through `_parse_block`."""
    found = []
    pos = 0
    end = len(buf)
    while pos < end:
        if buf[pos] == _LF:
            found.append(b"")
            pos += 1
            continue
        blank = buf.find(b"\n\n", pos)
        if blank < 0:
            break
        eol = buf.find(b"\n", pos)
        if (
            buf.startswith(b"event: ", pos)
            and buf.startswith(b"data: ", eol + 1)
            and buf.find(b"\n", eol + 1) == blank
        ):
            found.append(buf[eol + 7 : blank])
        else:
            found.append(_parse_block(buf[pos : blank + 2]).data_bytes)
        pos = blank + 2
    return found, pos


def _frame_any(buf: bytes, final: bool = False) -> tuple[list[SSEEvent], int]:
    """Blocks of a buffer with any line endings, walking line by line.

    A CR that ends `buf` may be half a CRLF, so it ends nothing unless `final`.
    """
    events = []
    block = line = 0
    size = len(buf)
    next_cr = buf.find(b"\r")
    next_lf = buf.find(b"\n")
    while True:
        if 0 <= next_cr < line:
            next_cr = buf.find(b"\r", line)
        if 0 <= next_lf < line:
            next_lf = buf.find(b"\n", line)
        if next_cr < 0 and next_lf < 0:
            break
        if next_lf < 0 or 0 <= next_cr < next_lf:
            if next_cr + 1 < size:
                eol, after = next_cr, next_cr + (2 if buf[next_cr + 1] == _LF else 1)
            elif final:
                eol, after = next_cr, size
            else:
                break  # CR or CRLF? The next byte decides.
        else:
            eol, after = next_lf, next_lf + 1
        if eol == line:  # a blank line ends the block
            events.append(_parse_block(buf[block:after]))
            block = after
        line = after
    return events, block


def _parse_block(raw: bytes) -> SSEEvent:
    event: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():  # bytes.splitlines splits on LF, CRLF and CR only
        if not line or line[0] == _COLON:
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace") or None
    return SSEEvent(raw, event, b"\n".join(data))


def encode_sse(data: bytes | str, event: str | None = None) -> bytes:
    """One SSE block: an optional `event:` line, one `data:` line per line of `data`."""
    if isinstance(data, str):
        data = data.encode()
    out = [] if event is None else [b"event: " + _single_line(event) + b"\n"]
    for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        out.append(b"data: " + line + b"\n")
    out.append(b"\n")
    return b"".join(out)


def _single_line(event: str) -> bytes:
    if "\r" in event or "\n" in event:
        raise ValueError("an SSE event name cannot contain a line break")
    return event.encode()
