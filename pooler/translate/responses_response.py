"""Upstream Responses events → what a public /v1/responses client sees. Pure.

Streaming: events pass through one for one, except Codex-only ones (`codex.*` such as
`codex.rate_limits`, and `response.metadata`), which the OpenAI SDKs do not know, and a
`response.failed` whose error is sanitized (`failures.UpstreamFailure`).

Not streaming: the events are collected into the final `response` object. The gateway's
relay already runs `StreamAccounting(collect_output=True)`, whose `assembled_response()`
rebuilds the output from the `response.output_item.done` items (the Codex backend sends
`output: []` in `response.completed`); `public_response` finishes that object.
`collect_response` does the same from already-parsed event dicts, through the same class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pooler.errors import PoolerError, UpstreamError
from pooler.protocol.stream_accounting import TERMINAL_TYPES, StreamAccounting
from pooler.translate.failures import UpstreamFailure, failure_of_event

__all__ = [
    "collect_response",
    "is_public_event_type",
    "public_event",
    "public_response",
    "public_usage",
    "response_failure",
    "stream_closed_error",
]

HIDDEN_TYPES = frozenset({"response.metadata"})
HIDDEN_PREFIXES = ("codex.",)
_USAGE_DETAILS = {
    "input_tokens_details": ("cached_tokens", "cache_write_tokens"),
    "output_tokens_details": ("reasoning_tokens",),
}


def is_public_event_type(event_type: str) -> bool:
    """May a public Responses client see an event of this type? (For byte relays that only
    classify the type, e.g. with `pooler.protocol.usage.classify_event_type`.)"""
    return event_type not in HIDDEN_TYPES and not event_type.startswith(HIDDEN_PREFIXES)


def public_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event to relay to a public client, or None to leave it out."""
    kind = event.get("type")
    if not isinstance(kind, str) or not is_public_event_type(kind):
        return None
    if kind == "response.failed":
        return _sanitized_failed(event)
    if kind == "error":
        failure = failure_of_event(event)
        return {**failure.body()["error"], "type": "error", **_sequence(event)}
    if kind in TERMINAL_TYPES and isinstance(event.get("response"), Mapping):
        return {**event, "response": _with_public_usage(event["response"])}
    return dict(event)


def public_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Usage with every detail count the public shape requires (missing ones read 0)."""
    out = dict(usage)
    for details, keys in _USAGE_DETAILS.items():
        given = usage.get(details)
        counts = dict(given) if isinstance(given, Mapping) else {}
        out[details] = {key: 0 for key in keys} | counts
    return out


def _with_public_usage(response: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(response)
    if isinstance(response.get("usage"), Mapping):
        out["usage"] = public_usage(response["usage"])
    return out


def _sanitized_failed(event: Mapping[str, Any]) -> dict[str, Any]:
    failure = failure_of_event(event)
    response = event.get("response")
    response = _with_public_usage(response) if isinstance(response, Mapping) else {}
    response["status"] = "failed"
    response["error"] = {"code": failure.code, "message": failure.message}
    return {"type": "response.failed", "response": response, **_sequence(event)}


def _sequence(event: Mapping[str, Any]) -> dict[str, Any]:
    number = event.get("sequence_number")
    return {} if number is None else {"sequence_number": number}


def collect_response(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The final `response` object of a whole upstream stream, output rebuilt.

    Raises the sanitized failure of an `error` event, and `UpstreamError`
    (`upstream_stream_closed`) when the stream holds no terminal event.
    """
    accounting = StreamAccounting(collect_output=True)
    for event in events:
        if event.get("type") == "error":
            raise failure_of_event(event).to_error()
        accounting.feed(b"data: " + orjson.dumps(dict(event)) + b"\n\n")
        if accounting.terminal_type is not None:
            break
    if accounting.terminal_type is None:
        raise stream_closed_error()
    return accounting.assembled_response()


def stream_closed_error() -> PoolerError:
    return UpstreamError(
        "the upstream stream ended before the response completed", code="upstream_stream_closed"
    )


def response_failure(response: Mapping[str, Any]) -> UpstreamFailure | None:
    """The sanitized failure of a `failed` response object, None for any other status."""
    if response.get("status") != "failed":
        return None
    return failure_of_event({"response": response})


def public_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """The body for a non-streaming /v1/responses client; raises when it failed.

    `completed` and `incomplete` responses are answered as they are (200), like the public
    API does; a `failed` one raises the sanitized error (a `PoolerError`).
    """
    failure = response_failure(response)
    if failure is not None:
        raise failure.to_error()
    out = _with_public_usage(response)
    out["object"] = "response"
    return out
