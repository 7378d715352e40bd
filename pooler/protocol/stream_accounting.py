"""Watching a relayed Responses SSE stream for what the gateway must account for. Pure.

Only a handful of event types are parsed in full (terminal events, rate limits, and the
output items when a non-streaming answer has to be assembled); deltas pass untouched.

Most chunks hold only whole events of kinds that are not parsed (text deltas): `feed`
counts such events in one loop of its own, without the decoder's framing or a call per
event. Anything else takes the exact path: the SSE decoder frames every event and each is
looked at alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from pooler.protocol.ratelimit import (
    RateLimitSnapshot,
    merge_snapshots,
    parse_rate_limits_event,
)
from pooler.protocol.sse import SSEDecoder
from pooler.protocol.usage import TokenUsage, usage_from_completed

TERMINAL_TYPES = frozenset({"response.completed", "response.failed", "response.incomplete"})
_PARSED_TYPES = TERMINAL_TYPES | {
    "codex.rate_limits",
    "response.output_item.done",
    "response.created",
}
_PARSED_TYPES_BYTES = frozenset(t.encode() for t in _PARSED_TYPES)
# An event whose data starts with its type (the Codex backend writes `"type"` first) and
# names one not parsed above is counted without being parsed: most of a stream's events.
_TYPE_PREFIX = '{"type":"'
_TYPE_PREFIX_BYTES = _TYPE_PREFIX.encode()
_TYPE_AT = len(_TYPE_PREFIX)
_DATA_TYPE_AT = len(b"data: ") + _TYPE_AT


class StreamAccounting:
    def __init__(self, *, collect_output: bool = False) -> None:
        self._decoder = SSEDecoder()
        self._collect = collect_output
        self.terminal_type: str | None = None
        self.response: dict[str, Any] | None = None
        self.usage: TokenUsage | None = None
        self.rate_limits: RateLimitSnapshot | None = None
        self.error_code: str | None = None
        self.output_items: list[dict[str, Any]] = []
        self.response_id: str | None = None  # from response.created, before any output
        self.events = 0

    @property
    def completed(self) -> bool:
        return self.terminal_type == "response.completed"

    def has_ended(self) -> bool:
        """Whether the terminal event (completed, failed or incomplete) has been seen."""
        return self.terminal_type is not None

    def feed(self, chunk: bytes) -> None:
        # Fast path (issue 17): with nothing held back and no CR, the leading blocks shaped
        # as the Codex backend writes them (`event: NAME`, `data: {"type":"KIND"...` on
        # one line, a blank line) whose KIND is plainly not parsed are only counted, in
        # this loop: what the decoder (`_data_lf`) and `_on_event` would do with them, with
        # no call per event and no scan of their text but `find`'s. The rest of the chunk
        # (from the first other block, or a block not yet whole) takes the exact path.
        pos = 0
        if not self._decoder.held and b"\r" not in chunk:
            size = len(chunk)
            parsed = _PARSED_TYPES_BYTES
            count = 0
            while pos < size and chunk.startswith(b"event: ", pos):
                at = chunk.find(b"\n", pos) + 1
                if not at or not chunk.startswith(b'data: {"type":"', at):
                    break
                at += _DATA_TYPE_AT
                # The data line's end, then a blank line (no LF: -1, and the test on
                # `blank` fails, on a one-byte slice).
                blank = chunk.find(b"\n", at)
                end = chunk.find(b'"', at, blank)
                if (
                    end < 0
                    or not chunk.startswith(b"\n\n", blank)
                    or chunk[at:end] in parsed
                    or chunk.find(b"\\", at, end) >= 0
                ):
                    break
                count += 1
                pos = blank + 2
            self.events += count
            if pos == size:
                return
        known = self.response_id
        for data in self._decoder.feed_data(chunk[pos:] if pos else chunk):
            self._on_event(data)
        if self.response_id is not None and self.response_id != known:
            self._response_id_named()

    def _response_id_named(self) -> None:
        """A chunk fed named a (new) response id: for a subclass to act on."""

    def _on_event(self, data: str | bytes) -> None:
        """One event's data: the SSE `data` bytes, or a websocket frame's text."""
        self.events += 1
        if not data or _unparsed_type(data):
            return
        try:
            parsed = orjson.loads(data)
        except ValueError:
            if isinstance(data, str):
                return
            try:  # invalid UTF-8 reads as U+FFFD, as when the data was decoded first
                parsed = orjson.loads(data.decode("utf-8", "replace"))
            except ValueError:
                return
        if not isinstance(parsed, dict):
            return
        event_type = parsed.get("type")
        if event_type not in _PARSED_TYPES:
            return
        if event_type == "response.output_item.done":
            item = parsed.get("item")
            if self._collect and isinstance(item, dict):
                self.output_items.append(item)
        elif event_type == "codex.rate_limits":
            event = parse_rate_limits_event(parsed, time.time())  # one per limit family
            self.rate_limits = merge_snapshots(self.rate_limits, event)
        elif event_type == "response.created":
            response = parsed.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.response_id = response["id"]
        else:
            self.terminal_type = str(event_type)
            response = parsed.get("response")
            self.response = response if isinstance(response, dict) else None
            if event_type == "response.completed":
                self.usage = usage_from_completed(parsed)
            else:
                self.error_code = _error_code(self.response) or event_type.split(".")[-1]

    def assembled_response(self) -> dict[str, Any]:
        """The final `response` object, its output rebuilt from the streamed items."""
        response = dict(self.response or {})
        if self.output_items and not response.get("output"):
            response["output"] = self.output_items
        return response


def _unparsed_type(data: str | bytes) -> bool:
    """Whether `data` plainly names a type that is not parsed (no escape in its value):
    such an event is ignored after a parse anyway, so it is not parsed at all."""
    if isinstance(data, bytes):
        if not data.startswith(_TYPE_PREFIX_BYTES):
            return False
        end = data.find(b'"', _TYPE_AT)
        return (
            end > 0
            and data.find(b"\\", _TYPE_AT, end) < 0
            and (data[_TYPE_AT:end] not in _PARSED_TYPES_BYTES)
        )
    if not data.startswith(_TYPE_PREFIX):
        return False
    end = data.find('"', _TYPE_AT)
    return (
        end > 0 and data.find("\\", _TYPE_AT, end) < 0 and data[_TYPE_AT:end] not in _PARSED_TYPES
    )


def _error_code(response: dict[str, Any] | None) -> str | None:
    if response is None:
        return None
    error = response.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    details = response.get("incomplete_details")
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        return str(details["reason"])
    return None


def failed_event(response_id: str | None, code: str, message: str) -> bytes:
    payload = {
        "type": "response.failed",
        "response": {
            "id": response_id,
            "object": "response",
            "status": "failed",
            "error": {"code": code, "message": message, "type": "server_error"},
        },
    }
    return (
        b"event: response.failed\ndata: "
        + json.dumps(payload, separators=(",", ":")).encode()
        + b"\n\n"
    )
