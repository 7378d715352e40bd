"""Watching a relayed Responses SSE stream for what the gateway must account for. Pure.

Only a handful of event types are parsed in full (terminal events, rate limits, and the
output items when a non-streaming answer has to be assembled); deltas pass untouched.

Most chunks hold only whole events of kinds that are not parsed (text deltas): `feed`
proves that of a whole chunk with one regex search and counts its events, without framing
it event by event (`_skippable`). Anything else takes the exact path: the SSE decoder
frames every event and each is looked at alone.
"""

from __future__ import annotations

import json
import re
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

# What may make a chunk's events matter, or frame them other than one per b"\n\n": a
# parsed type's name (JSON could also spell one with \u escapes, the only escapes that
# give letters, dots or underscores), a CR (a line end), three LFs in a row (a block that
# is a lone LF). An event's data is its `data:` lines' values joined by LF and a type name
# holds no LF, so a name in the data is a name in the chunk. False alarms (a delta's text
# naming one) only send the chunk down the exact path.
_MAY_MATTER = re.compile(
    b"|".join(re.escape(name) for name in sorted(_PARSED_TYPES_BYTES)) + rb"|\\u|\r|\n\n\n"
)
_may_matter = _MAY_MATTER.search


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
        decoder = self._decoder
        if (
            not decoder.held
            and chunk.endswith(b"\n\n")
            and chunk[0] != 10  # LF
            and _may_matter(chunk) is None
        ):
            # Whole blocks (nothing held before them), none parsed: `_on_event` would only
            # count each, and the decoder would hold nothing back. No CR, no LF run over
            # two, no leading LF: each block ends at one b"\n\n".
            self.events += chunk.count(b"\n\n")
            return
        known = self.response_id
        for data in decoder.feed_data(chunk):
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
