"""Classifying an upstream answer that is not a stream: what kind of failure, what to do;
the headers forwarded, relayed and kept for the outcome; `Entered`, the end of an upstream
request's context."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pooler.actors import messages as m
from pooler.protocol.ratelimit import parse_usage_limit_error

# Client headers the upstream needs (identity, continuity, features). Everything else,
# including the client's Authorization, stays behind.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        b"originator",
        b"user-agent",
        b"session-id",
        b"session_id",
        b"thread-id",
        b"conversation_id",
        b"x-client-request-id",
        b"x-codex-window-id",
        b"x-codex-turn-metadata",
        b"x-codex-turn-state",
        b"x-codex-beta-features",
        b"x-codex-parent-thread-id",
        b"x-openai-subagent",
        b"x-codex-installation-id",
        b"x-responsesapi-include-timing-metrics",
        b"openai-beta",
        b"version",
    }
)

Header = tuple[bytes, bytes]


def forwarded_headers(
    client_headers: Iterable[Header],
    *extra: Header,
    names: frozenset[bytes] = FORWARDED_REQUEST_HEADERS,
) -> list[Header]:
    """The client's headers the upstream gets (`names`), then `extra`; the account's own
    are added per attempt (`leasing.account_headers`)."""
    return [*((k, v) for k, v in client_headers if k in names), *extra]


RELAYED_RESPONSE_PREFIXES = (
    b"x-codex-",
    b"x-models-etag",
    b"openai-model",
    b"x-reasoning-included",
)


def relayed_response_headers(
    headers: list[tuple[bytes, bytes]], models_etag: str | None = None
) -> list[tuple[bytes, bytes]]:
    """The upstream answer's headers a Codex client reads. `models_etag`: the Pool's merged
    catalog ETag, sent instead of the account's `x-models-etag`, so that the client (which
    compares it with the ETag of the `/models` it got from the gateway) refetches only
    when the Pool's catalog changed."""
    if models_etag is None:
        return [(k, v) for k, v in headers if k.startswith(RELAYED_RESPONSE_PREFIXES)]
    kept = [
        (k, v)
        for k, v in headers
        if k.startswith(RELAYED_RESPONSE_PREFIXES) and k != b"x-models-etag"
    ]
    kept.append((b"x-models-etag", models_etag.encode()))
    return kept


def held_outcome_headers(headers: list[Header]) -> bytes | tuple[Header, ...]:
    """What a held stream keeps of the upstream answer's headers for its `Outcome`: those
    named `x-...`, the only ones the account actor reads (`parse_rate_limit_headers`,
    when the outcome arrives), packed in one bytes object (~20 headers as tuples are ~3
    KiB for as long as the stream is held; ops/bench/idle_memory.py). `outcome_headers`
    gives them back. A name or value with a NUL (llhttp refuses it) stays unpacked."""
    kept = [(k, v) for k, v in headers if k[:2].lower() == b"x-"]
    packed = b"".join([b"%s\0%s\0" % pair for pair in kept])
    return packed if packed.count(b"\0") == 2 * len(kept) else tuple(kept)


def outcome_headers(held: bytes | tuple[Header, ...]) -> tuple[Header, ...]:
    """The headers `held_outcome_headers` kept, as an `Outcome` carries them."""
    if isinstance(held, tuple):
        return held
    fields = held.split(b"\0")
    return tuple(zip(fields[0:-1:2], fields[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    outcome: m.Outcome
    status: int
    body: bytes
    error_code: str


def _error_fields(body: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}, None
    if not isinstance(parsed, dict):
        return {}, None
    error = parsed.get("error")
    if not isinstance(error, dict):
        return parsed, None
    code = error.get("code") or error.get("type")
    return parsed, code if isinstance(code, str) else None


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for key, value in headers:
        if key == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def classify_failure(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> UpstreamFailure:
    parsed, code = _error_fields(body)
    now = time.time()
    kept = tuple(headers)
    if status == 429:
        resets_at = parse_usage_limit_error(parsed, now) if parsed else None
        if code in ("usage_limit_reached", "usage_not_included") or resets_at is not None:
            outcome = m.Outcome(m.USAGE_LIMIT, status, kept, resets_at=resets_at)
            return UpstreamFailure(outcome, status, body, code or "usage_limit_reached")
        outcome = m.Outcome(m.RATE_LIMITED, status, kept, retry_after=_retry_after(headers))
        return UpstreamFailure(outcome, status, body, code or "rate_limit_exceeded")
    if status == 401:
        return UpstreamFailure(
            m.Outcome(m.UNAUTHORIZED, status, kept), status, body, code or "unauthorized"
        )
    if status >= 500:
        return UpstreamFailure(
            m.Outcome(m.SERVER_ERROR, status, kept), status, body, code or "upstream_server_error"
        )
    return UpstreamFailure(
        m.Outcome(m.CLIENT_ERROR, status, kept), status, body, code or f"upstream_{status}"
    )


class Entered:
    """`async with` over an async context manager already entered (its `__aexit__` runs
    at the end of the block): what an AsyncExitStack did here, without the stack's deque
    (~0.7 KiB for as long as a stream is held; ops/bench/idle_memory.py)."""

    __slots__ = ("_context",)

    def __init__(self, context: AbstractAsyncContextManager[Any]) -> None:
        self._context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._context.__aexit__(kind, error, traceback)
