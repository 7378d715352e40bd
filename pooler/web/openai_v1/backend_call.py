"""One call to the ChatGPT backend on a leased account, its answer read whole: what the
`/v1` files and transcription routes make of the relays' pieces (relay.py) when they must
read the backend's answer before answering in OpenAI's shape.

    call = LeasedCall(gw, attempt)           # an attempt of the attempt loop
    answer = await call.exchange(...)        # raises CallFailed (failover or not)

Deadlines come from the gateway settings: the first byte of the answer, then the idle
time between its chunks. Bodies are never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from pooler.actors import messages as m
from pooler.errors import BadRequest, PoolerError, UpstreamError
from pooler.upstream.errors import UpstreamTransportError
from pooler.upstream.http1 import UpstreamPool
from pooler.web.attempts import Attempt, unreachable
from pooler.web.upstream_exchange import classify_failure

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class CallFailed(Exception):
    """The backend did not answer with a 2xx/3xx; `failover` when another account may."""

    def __init__(self, outcome: m.Outcome, code: str, status: int | None = None) -> None:
        super().__init__(code)
        self.outcome = outcome
        self.code = code
        self.status = status

    @property
    def failover(self) -> bool:
        return self.outcome.kind in m.FAILOVER_KINDS or self.outcome.kind == m.UNAUTHORIZED

    def client_error(self) -> PoolerError:
        """What the client hears when nobody else is tried: an upstream 4xx keeps its
        status (the request itself was refused), anything else is a 502."""
        if self.status is not None and 400 <= self.status < 500 and not self.failover:
            error = BadRequest(
                f"the upstream refused the request (HTTP {self.status})",
                code="upstream_request_failed",
            )
            error.status = self.status
            return error
        return UpstreamError(f"the upstream request failed ({self.code})")


class LeasedCall:
    """Backend calls made by one attempt of the attempt loop (pooler.web.attempts): each
    failure is noted on the attempt, so the lease is released with it (the last failure,
    else OK once `succeeded()` was called, else CANCELLED)."""

    def __init__(self, gw: Gateway, attempt: Attempt) -> None:
        self.gw = gw
        self.attempt = attempt

    def succeeded(self, status: int) -> None:
        self.attempt.ended(m.Outcome(m.OK, status))

    async def exchange(
        self,
        upstream: UpstreamPool,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        max_answer: int,
    ) -> Answer:
        """One request; its answer (at most `max_answer` bytes) or CallFailed."""
        settings = self.gw.settings
        try:
            with trio.fail_after(settings.upstream_first_byte_timeout_s):
                context = upstream.request(method, target, headers, body)
                response = await context.__aenter__()
        except (trio.TooSlowError, UpstreamTransportError) as exc:
            raise self._failed(*unreachable(exc)) from None
        except ValueError:  # a request line the client could not have caused
            raise self._failed(m.Outcome(m.CLIENT_ERROR), "invalid_upstream_request") from None
        try:
            self.attempt.record.answered(response.status)
            try:
                with trio.fail_after(settings.upstream_idle_timeout_s):
                    answer = await _read_bounded(response.aiter_bytes(), max_answer)
            except (trio.TooSlowError, UpstreamTransportError):
                # Nothing reached the client yet: another account may still answer.
                outcome = m.Outcome(m.TRANSPORT_ERROR, response.status)
                raise self._failed(outcome, "upstream_stream_broken") from None
            except _TooLarge:
                outcome = m.Outcome(m.CLIENT_ERROR, response.status)
                raise self._failed(outcome, "invalid_upstream_response") from None
            if response.status >= 400:
                failure = classify_failure(response.status, response.headers, answer)
                raise self._failed(failure.outcome, failure.error_code, response.status)
            return Answer(response.status, response.headers, answer)
        finally:
            with contextlib.suppress(UpstreamTransportError):
                await context.__aexit__(None, None, None)

    def fail(self, kind: m.OutcomeKind, code: str) -> CallFailed:
        """Note a failure the caller found in an answer (e.g. unusable JSON)."""
        return self._failed(m.Outcome(kind, self.attempt.record.status_code), code)

    def _failed(self, outcome: m.Outcome, code: str, status: int | None = None) -> CallFailed:
        self.attempt.ended(outcome, code)
        return CallFailed(outcome, code, status)


class _TooLarge(Exception):
    pass


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)
