"""Token usage of a finished response, and a cheap look at a stream event's type (pure).

The relay forwards every SSE event but fully parses only the few it accounts for
(`response.completed`, `response.failed`, `response.incomplete`, `codex.rate_limits`,
`response.output_item.done`). `classify_event_type` finds the type of the rest without
`json.loads`: the Codex backend (and `json.dumps`) put `"type"` first, so the fast path
reads the first key's string value; anything else falls back to a full parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenUsage", "classify_event_type", "usage_from_completed"]

_TYPE_PREFIXES = (b'{"type":"', b'{"type": "')


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int


def usage_from_completed(event: Mapping[str, Any]) -> TokenUsage | None:
    """`response.usage` of a `response.completed` event (or `.incomplete` / `.failed`).

    None when the event carries no usage object; missing or garbage counts read as 0, and
    a missing total is input + output.
    """
    response = event.get("response") if isinstance(event, Mapping) else None
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    input_tokens = _count(usage.get("input_tokens")) or 0
    output_tokens = _count(usage.get("output_tokens")) or 0
    total = _count(usage.get("total_tokens"))
    return TokenUsage(
        input_tokens=input_tokens,
        cached_input_tokens=_count(_detail(usage, "input_tokens_details", "cached_tokens")) or 0,
        output_tokens=output_tokens,
        reasoning_tokens=_count(_detail(usage, "output_tokens_details", "reasoning_tokens")) or 0,
        total_tokens=input_tokens + output_tokens if total is None else total,
    )


def classify_event_type(data: bytes) -> bytes | None:
    """The top-level `"type"` string of an SSE data payload (a JSON object), or None."""
    for prefix in _TYPE_PREFIXES:
        if data.startswith(prefix):
            start = len(prefix)
            end = data.find(b'"', start)
            # An escape could hide the closing quote or change the value; a payload that
            # does not end like an object may be truncated: let json decide those.
            if end > 0 and data.find(b"\\", start, end) < 0 and data.rstrip().endswith(b"}"):
                return data[start:end]
            break
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return None
    kind = payload.get("type") if isinstance(payload, dict) else None
    if not isinstance(kind, str):
        return None
    try:
        return kind.encode()
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
        return None


def _detail(usage: Mapping[str, Any], details: str, key: str) -> object:
    inner = usage.get(details)
    return inner.get(key) if isinstance(inner, Mapping) else None


def _count(value: object) -> int | None:
    """A token count: a non-negative int (or integral float); anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None
