"""Relaying one Responses request through the attempt loop: lease, stream the upstream's
answer to the client as it comes (or collect it for a client that did not stream), fail
over only before the first byte (DESIGN §2), account, pin, log.

Failover happens only before the first byte reaches the client; after that an upstream
failure is relayed in-protocol as `response.failed` and nothing is replayed. Shared by the
Codex backend route and `/v1` (which present the answer in their own protocol through a
`Presenter`); each gives the relay its own way of opening a request (`OpenRequest`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from pooler.actors import messages as m
from pooler.client_gone import EXTENSION as CLIENT_GONE
from pooler.client_gone import client_gone
from pooler.errors import PoolerError, UpstreamError
from pooler.http_server.response_writer import BODY_FOLLOWS, BODY_PIECES, WAIT_FOLLOWS
from pooler.protocol.stream_accounting import StreamAccounting, failed_event
from pooler.routing.circuit import RESPONSES
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import Scope, Send, send_bytes, send_json
from pooler.web.attempts import Attempt, run_attempts, unreachable
from pooler.web.continuity import continuity_keys, response_key
from pooler.web.leasing import LeaseAttempts, account_headers, pin
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_record import AnsweredRequest, RequestRecord, start_record
from pooler.web.upstream_exchange import (
    Entered,
    classify_failure,
    forwarded_headers,
    held_outcome_headers,
    outcome_headers,
    relayed_response_headers,
)

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.responses")

UPSTREAM_PATH = "/responses"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
# After a collected answer is sent, how long the rest of the upstream body may take.
AFTER_ANSWER_READ_S = 5.0


class Presenter(Protocol):
    """How the upstream's events reach a client of another protocol (`/v1`)."""

    def translate(self, chunk: bytes) -> bytes:
        """The client's bytes for one upstream chunk (possibly none)."""

    def failed(self, code: str, message: str) -> bytes:
        """The in-stream failure to send when the upstream breaks off after the start."""

    def collected(self, accounting: StreamAccounting) -> dict[str, Any]:
        """The whole answer for a client that did not stream; raises a PoolerError when the
        upstream response failed."""


@dataclass(slots=True)
class ProxiedRequest:
    """One request to relay: its Pool, the upstream body (asking for a stream) and its
    parsed payload, and how the answer is presented (None: the upstream's bytes as they
    come, for Codex clients)."""

    pool_id: str
    body: bytes
    payload: dict[str, Any]
    presenter: Presenter | None = None

    def release(self) -> None:
        """Forget the body and payload once no attempt can follow (the client has the
        head of a stream): a Codex body carries the whole conversation, and a stream may
        be held for minutes."""
        self.body = b""
        self.payload = {}


OpenRequest = Callable[[GatewayRequest, RequestRecord], Awaitable[ProxiedRequest]]


class ResponsesRelay:
    """One Responses route: `open_request` authenticates and reads the request (and sets
    the record's route, model and stream); the relay does the rest."""

    def __init__(self, gateway: Gateway, route: str, open_request: OpenRequest) -> None:
        self.gw = gateway
        self.route = route
        self.open_request = open_request

    async def __call__(self, client: GatewayRequest) -> Response:
        gw = self.gw
        record = start_record(gw, client.scope, self.route, "http")
        request_id_header = (b"x-request-id", record.request_id.encode())
        log = gw.log_request
        async with AnsweredRequest(record, client.send, [request_id_header], log, client.body):
            request = await self.open_request(client, record)
            client.body.clear()  # the relay has the body it sends (`request.release`)
            record.transport = "http_sse" if record.stream else "http_json"
            gw.catalog.check_model(request.pool_id, str(request.payload["model"]))
            async with gw.admission.admit("stream" if record.stream else "responses"):
                await self._proxy(client, record, request)
        return PUSHED

    async def _proxy(
        self, client: GatewayRequest, record: RequestRecord, request: ProxiedRequest
    ) -> None:
        """Run the attempts; a client that leaves before the answer is complete cancels
        them and the request is logged as its disconnect.

        The server must say when the client leaves (pooler.client_gone): the gateway is
        only served by pooler.serving, which provides it. A server that does not is
        refused loudly rather than watched by a task per request (a second way nothing
        tested and production never took)."""
        gone = client_gone(client.scope)
        if gone is None:
            log.error(
                "the server gives no %r scope extension: the gateway must be served by "
                "pooler.serving (pooler.client_gone); refusing the request",
                CLIENT_GONE,
            )
            raise PoolerError("the gateway's server is misconfigured", code="server_misconfigured")
        with trio.CancelScope() as scope:

            def on_leave() -> None:  # run by the server, synchronously (pooler.client_gone)
                if record.outcome == "unknown":  # the answer is not complete yet
                    scope.cancel()

            gone.on_leave(on_leave)
            try:
                await self._attempts(client.scope, client.send, record, request)
            finally:
                gone.on_leave(None)
        if scope.cancel_called and record.outcome == "unknown":
            record.finish(499, "client_disconnected")

    async def _attempts(
        self,
        scope: Scope,
        send: Send,
        record: RequestRecord,
        request: ProxiedRequest,
    ) -> None:
        gw = self.gw
        pool_id = request.pool_id
        # No local keeps the payload: it is released once a stream's head is sent.
        hard_key, soft_keys = continuity_keys(request.payload, scope)
        model = str(request.payload["model"])
        attempts = LeaseAttempts(pool_id, soft_keys, hard_key, route_class=RESPONSES, model=model)
        exchange = partial(self._exchange, scope, request, record, send, attempts)
        budget = gw.pool_policy(pool_id).retry_budget
        await run_attempts(gw, attempts, record, exchange, budget=budget)

    async def _exchange(
        self,
        scope: Scope,
        request: ProxiedRequest,
        record: RequestRecord,
        send: Send,
        attempts: LeaseAttempts,
        attempt: Attempt,
    ) -> None:
        """One upstream request on `attempt.lease`, relayed to the client (or a failure
        before its first byte)."""
        settings = self.gw.settings
        lease = attempt.lease
        # The upstream is always asked for a stream, whatever the client accepts. The
        # headers are built per attempt and kept by no local: a held stream keeps nothing
        # it no longer needs (ops/bench/idle_memory.py).
        upstream = lease.upstream.request(
            "POST", UPSTREAM_PATH, upstream_headers(scope, lease), request.body
        )
        try:
            with trio.fail_after(settings.upstream_first_byte_timeout_s):
                response = await upstream.__aenter__()
        except (trio.TooSlowError, UpstreamTransportError) as exc:
            return attempt.failed(*unreachable(exc))
        async with Entered(upstream):
            attempt.record.answered(response.status)
            if response.status != 200:
                return await self._refused(attempt, response, record, send)
            # Pin as soon as the upstream accepts, before relaying: a client can send its
            # next turn the moment it has the last byte, and that lease request must
            # find the pin (the supervisor's mailbox keeps the order).
            pin(self.gw.pool_mailbox, attempts.pool_id, attempts.pin_keys, lease.account_id)
            accounting = ResponseAccounting(
                self.gw.pool_mailbox, attempts.pool_id, lease.account_id, not record.stream
            )
            if record.stream:
                request.release()  # streaming from here on: no attempt follows
                outcome = await self._relay_stream(
                    response, send, record, accounting, request.presenter, body_pieces(scope)
                )
                attempt.ended(outcome)
            else:
                await self._collect(attempt, response, send, record, accounting, request.presenter)

    async def _refused(
        self, attempt: Attempt, response: Any, record: RequestRecord, send: Send
    ) -> None:
        """An upstream answer other than 200: a failure to fail over from, or the upstream's
        refusal of the request itself, relayed as is."""
        settings = self.gw.settings
        error_body = b""
        with trio.move_on_after(settings.upstream_idle_timeout_s):
            with contextlib.suppress(UpstreamTransportError):
                error_body = await _read_limited(response, settings.max_error_body_bytes)
        failure = classify_failure(response.status, response.headers, error_body)
        outcome = failure.outcome
        if outcome.kind == m.UNAUTHORIZED or outcome.kind in m.FAILOVER_KINDS:
            return attempt.failed(outcome, failure.error_code)
        attempt.ended(outcome, failure.error_code)
        record.mark_first_byte()
        record.finish(failure.status, "upstream_client_error", failure.error_code)
        record.response_bytes += await send_bytes(
            send,
            failure.status,
            error_body,
            [(b"content-type", b"application/json"), (b"x-request-id", record.request_id.encode())],
        )

    async def _relay_stream(
        self,
        response: Any,
        send: Send,
        record: RequestRecord,
        accounting: ResponseAccounting,
        presenter: Presenter | None,
        pieces: PieceWrite | None = None,
    ) -> m.Outcome:
        idle = self.gw.settings.upstream_idle_timeout_s
        headers = [*SSE_HEADERS, (b"x-request-id", record.request_id.encode())]
        if presenter is None:  # a Codex client reads the account's x-codex headers
            headers.extend(
                relayed_response_headers(response.headers, self.gw.models_etag(record.pool_id))
            )
        # A stream may be held for minutes: it keeps only what its outcome reads of the
        # upstream's headers, packed, and no list of its own (ops/bench/idle_memory.py).
        kept = held_outcome_headers(response.headers)
        response.forget_headers()
        # The first upstream piece, if it is already at hand, goes out in the head's write
        # (BODY_FOLLOWS); the head is never kept waiting for one. Without it, the relay's
        # next step is `_pump`'s wait for it: a server that writes pieces without a yield
        # (`pieces`) writes the head so too (WAIT_FOLLOWS), that wait the schedule point.
        first = response.ready_piece()
        if first is not None:
            accounting.feed(first)  # first: a response id is pinned before the client sees it
            if presenter is not None:
                first = presenter.translate(first)
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        if first:
            start[BODY_FOLLOWS] = True
        elif pieces is not None:
            start[WAIT_FOLLOWS] = True
        await send(start)
        del headers, start
        record.mark_first_byte()
        # Each piece's write is followed by `_pump`'s wait for the upstream's next read (or,
        # at the body's end, by the last send): the server's `BODY_PIECES` writer, which
        # makes no yield of its own after the write, when it gives one. The first piece
        # too: it goes with the held head, and the wait for the next read follows.
        write = pieces if pieces is not None else partial(_send_piece, send)
        if first:
            record.response_bytes += len(first)
            await write(first)
        del first
        if presenter is None:  # only the one used is made: the stream's frame keeps it

            def on_chunk(chunk: bytes) -> bytes:
                accounting.feed(chunk)  # first: a response id is pinned before the client sees it
                record.response_bytes += len(chunk)
                return chunk

        else:

            def on_chunk(chunk: bytes) -> bytes:
                accounting.feed(chunk)
                assert presenter is not None
                shown = presenter.translate(chunk)
                record.response_bytes += len(shown)
                return shown

        failure = await _pump(response, idle, on_chunk, write)
        if failure is None and accounting.terminal_type is None:
            failure = "upstream_stream_closed"
        if failure is not None:
            message = "the upstream stream ended before the response completed"
            event = (
                failed_event(None, failure, message)
                if presenter is None
                else presenter.failed(failure, message)
            )
            record.response_bytes += len(event)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        record.usage = accounting.usage
        if failure is not None:
            record.finish(200, "stream_failed", failure)
            kind = m.TIMEOUT if failure == "stream_idle_timeout" else m.STREAM_FAILED
        else:
            outcome_name = "completed" if accounting.completed else "failed"
            record.finish(200, outcome_name, accounting.error_code)
            kind = m.OK
        # The record is final before the last write: a disconnect now changes nothing.
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return m.Outcome(kind, 200, outcome_headers(kept), rate_limits=accounting.rate_limits)

    async def _collect(
        self,
        attempt: Attempt,
        response: Any,
        send: Send,
        record: RequestRecord,
        accounting: ResponseAccounting,
        presenter: Presenter | None,
    ) -> None:
        """A non-streaming client: read the whole stream, answer with the final response."""
        idle = self.gw.settings.upstream_idle_timeout_s

        def collect(chunk: bytes) -> None:
            accounting.feed(chunk)

        # The answer is whole at the terminal event: the client is not kept waiting for
        # the upstream's end of body (a write and a read later; under load, two turns of
        # each event loop). The rest is read after the client has its answer.
        broken = await _pump(response, idle, collect, until=accounting.has_ended)
        headers = tuple(response.headers)
        if broken is not None or accounting.terminal_type is None:
            # Nothing reached the client yet, so another account may still answer.
            code = broken or "upstream_stream_closed"
            return attempt.failed(m.Outcome(m.TRANSPORT_ERROR, 200, headers), code)
        record.usage = accounting.usage
        record.mark_first_byte()
        attempt.ended(m.Outcome(m.OK, 200, headers, rate_limits=accounting.rate_limits))
        if presenter is not None:
            await self._present_collected(send, record, accounting, presenter)
        else:
            await self._answer_collected(send, record, accounting, response.headers)
        await _read_rest(response, AFTER_ANSWER_READ_S)

    async def _answer_collected(
        self,
        send: Send,
        record: RequestRecord,
        accounting: ResponseAccounting,
        upstream_headers: list[tuple[bytes, bytes]],
    ) -> None:
        extra = [
            (b"x-request-id", record.request_id.encode()),
            *relayed_response_headers(upstream_headers, self.gw.models_etag(record.pool_id)),
        ]
        if accounting.completed:
            record.finish(200, "completed")
            record.response_bytes += await send_json(
                send, 200, accounting.assembled_response(), extra
            )
        else:
            code = accounting.error_code or "upstream_error"
            error = UpstreamError("the upstream response failed", code=code)
            record.finish(502, "failed", code)
            record.response_bytes += await send_bytes(
                send, 502, error.body_bytes(), [*error.headers(), *extra]
            )

    async def _present_collected(
        self,
        send: Send,
        record: RequestRecord,
        accounting: ResponseAccounting,
        presenter: Presenter,
    ) -> None:
        request_id = (b"x-request-id", record.request_id.encode())
        try:
            answer = presenter.collected(accounting)
        except PoolerError as error:
            record.finish(error.status, "failed", error.code)
            headers = [*error.headers(), request_id]
            record.response_bytes += await send_bytes(
                send, error.status, error.body_bytes(), headers
            )
            return
        outcome = "completed" if accounting.completed else "failed"
        record.finish(200, outcome, None if accounting.completed else accounting.error_code)
        record.response_bytes += await send_json(send, 200, answer, [request_id])


PieceWrite = Callable[[bytes], Awaitable[None]]


def body_pieces(scope: Scope) -> PieceWrite | None:
    """The server's writer of a streamed answer's body pieces without a yield after each
    (`BODY_PIECES`, pooler.http_server.response_writer), or None when it gives none."""
    extensions = scope.get("extensions")
    return extensions.get(BODY_PIECES) if extensions else None


async def _send_piece(send: Send, piece: bytes) -> None:
    await send({"type": "http.response.body", "body": piece, "more_body": True})


def idle_slack(idle: float) -> float:
    """How much later than `idle` after its last chunk a stream may be cut (`_pump`): a
    32nd of it, at most a second."""
    return min(1.0, idle / 32)


async def _pump(
    response: Any,
    idle: float,
    on_chunk: Callable[[bytes], bytes | None],
    write: PieceWrite | None = None,
    until: Callable[[], bool] | None = None,
) -> str | None:
    """Hand each upstream chunk to `on_chunk` as it arrives, and `write` what it returns
    (when not empty); a failure code, or None at the end (or as soon as `until()` is true
    after a chunk). `on_chunk` is a plain function: one coroutine fewer per chunk.

    One cancel scope for the whole stream (a new scope per chunk cost ~7 % of the gateway's
    CPU on SSE), its deadline pushed on as chunks come: `idle` seconds without progress end
    the stream. A push is a context manager and a few calls inside trio, so it is not made
    per chunk: the deadline is set `slack` past `idle` (`idle_slack`) and pushed only once a
    chunk finds it closer than `idle`, so it is never less than `idle` after the last chunk
    (the stream is never cut early) and at most `slack` more, and a stream whose events
    come every few milliseconds pushes it about once a second.
    """
    slack = idle_slack(idle)
    now = trio.lowlevel.current_clock().current_time  # `trio.current_time`'s two layers less
    with trio.CancelScope() as scope:
        scope.deadline = now() + idle + slack
        try:
            async for chunk in response.aiter_bytes():
                piece = on_chunk(chunk)
                del chunk  # not kept while the next one is awaited (minutes, maybe)
                if piece and write is not None:
                    await write(piece)
                del piece
                if until is not None and until():
                    return None
                at = now()
                if at + idle > scope.deadline:
                    scope.deadline = at + idle + slack
        except UpstreamTransportError:
            return "upstream_stream_broken"
    return "stream_idle_timeout" if scope.cancelled_caught else None


async def _read_rest(response: Any, seconds: float) -> None:
    """Read what is left of an answered upstream body (its end, after the terminal event),
    so its connection can serve the next request; one that takes longer is closed."""
    if response.read_to_end_buffered():
        # Usually so: the end came in the read that brought the terminal event (the test
        # `UpstreamPool` makes before keeping a connection). Nothing to wait for, so no
        # deadline scope and no read loop (~60 Python calls a request).
        return
    with trio.move_on_after(seconds), contextlib.suppress(UpstreamTransportError):
        async for _ in response.aiter_bytes():
            pass


def upstream_headers(scope: Scope, lease: Any) -> list[tuple[bytes, bytes]]:
    """The headers of an upstream Responses request on `lease`: the client's forwarded
    ones, a JSON body, a stream asked for, the account's credentials."""
    base = forwarded_headers(
        scope["headers"],
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
    )
    return account_headers(lease, base)


class ResponseAccounting(StreamAccounting):
    """Stream accounting that pins the response id to its account as soon as the upstream
    names it, so a follow-up with `previous_response_id` finds it (a hard pin)."""

    def __init__(
        self, supervisor: Any, pool_id: str, account_id: str, collect_output: bool
    ) -> None:
        super().__init__(collect_output=collect_output)
        self._pin_to = (supervisor, pool_id, account_id)

    def _response_id_named(self) -> None:
        supervisor, pool_id, account_id = self._pin_to
        assert self.response_id is not None
        pin(supervisor, pool_id, (response_key(self.response_id),), account_id, hard=True)


async def _read_limited(response: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]
