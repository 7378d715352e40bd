"""Files, transcription and realtime calls: opaque request/answer relays through a Pool
account (protocol §1.8, §1.9).

Bodies (file metadata, audio, SDP) are held in memory for one request only, bounded by the
size limit (413 over it), so that an attempt can fail over before the first byte; they are
never logged or stored. A file created through an account is pinned to it (a hard
continuity key), so finalizing it and `/responses` requests that reference it go there.

The blob upload itself (`PUT upload_url`) does not pass through the gateway: the upstream
hands out a signed storage URL that needs no account credentials, relayed unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import orjson
import trio

from pooler.actors import messages as m
from pooler.errors import NotFound
from pooler.http_server.response_writer import BODY_FOLLOWS
from pooler.protocol.file_ids import check_file_id
from pooler.routing.circuit import CONTROL, RESPONSES
from pooler.upstream.errors import UpstreamTransportError
from pooler.upstream.http1 import UpstreamPool, UpstreamResponse
from pooler.web.asgi import Scope, Send, header
from pooler.web.attempts import Attempt, run_attempts, unreachable
from pooler.web.continuity import file_key
from pooler.web.leasing import FILE_PIN_TTL_S, LeaseAttempts, account_headers, pin
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_body import read_raw_body
from pooler.web.request_record import AnsweredRequest, RequestRecord, start_record
from pooler.web.upstream_exchange import (
    FORWARDED_REQUEST_HEADERS,
    classify_failure,
    forwarded_headers,
    relayed_response_headers,
)

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.relay")

FILES_PATH = "/backend-api/files"
FILES_PREFIX = FILES_PATH + "/"
TRANSCRIBE_PATH = "/backend-api/transcribe"
REALTIME_CALLS_PATH = "/backend-api/codex/realtime/calls"
MAX_FILES_BODY = 64 * 1024
# The answer headers a client of these routes needs, besides the `x-codex-*` family.
KEPT_RESPONSE_HEADERS = frozenset({b"content-type", b"location", b"etag"})
SENT_REQUEST_HEADERS = FORWARDED_REQUEST_HEADERS | {b"content-type", b"accept"}


def finalized_file_id(scope: Scope) -> str:
    """The id of `/backend-api/files/{id}/uploaded`, read from the path as sent (`raw_path`:
    an escaped `/`, `?` or `.` is not decoded into something that means a path), and
    checked against the backend's id shape (400 naming `file_id` otherwise)."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode("utf-8", "surrogateescape")
    if not raw.startswith(FILES_PREFIX.encode()):
        raise NotFound(f"no such endpoint: {path[:200]}")
    file_id, _, action = raw.removeprefix(FILES_PREFIX.encode()).partition(b"/")
    if action != b"uploaded":
        raise NotFound(f"no such endpoint: {path[:200]}")
    return check_file_id(file_id.decode("latin-1"))


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """What one relayed route is: its log name, upstream target, limits and pinning."""

    route: str
    route_class: str
    max_body: int | None  # None: the gateway's max_body_bytes
    failover: bool = True


class RelayRoute:
    """One opaque relay: authenticate, lease (fail over before the first byte), relay."""

    def __init__(self, gateway: Gateway, spec: RelaySpec, backend: UpstreamPool) -> None:
        self.gw = gateway
        self.spec = spec
        self.backend = backend  # the ChatGPT backend base (`…/backend-api`), for all accounts

    async def __call__(self, request: GatewayRequest) -> Response:
        gw, spec, scope, send = self.gw, self.spec, request.scope, request.send
        record = start_record(gw, scope, spec.route, "http")
        extra = [(b"x-request-id", record.request_id.encode())]
        async with AnsweredRequest(record, send, extra, gw.log_request, request.body):
            key, pool = gw.keys.authenticate(header(scope, b"authorization"))
            record.pool_id, record.key_prefix = pool.pool_id, key.prefix
            target, hard_key = self.target(scope)
            attempts = LeaseAttempts(pool.pool_id, (), hard_key, route_class=spec.route_class)
            async with gw.admission.admit("responses"):  # before the body costs memory
                body = await read_raw_body(gw, request, spec.max_body)
                await self._attempts(scope, send, record, attempts, target, body)
        return PUSHED

    def target(self, scope: Scope) -> tuple[str, bytes | None]:
        """The upstream path (relative to the ChatGPT backend) and the hard pin, if any."""
        path: str = scope["path"]
        if path.startswith(FILES_PREFIX):
            file_id = finalized_file_id(scope)
            return f"/files/{file_id}/uploaded", file_key(file_id)
        return path.removeprefix("/backend-api"), None

    async def _attempts(
        self,
        scope: Scope,
        send: Send,
        record: RequestRecord,
        attempts: LeaseAttempts,
        target: str,
        body: bytes,
    ) -> None:
        gw = self.gw
        base = forwarded_headers(scope["headers"], names=SENT_REQUEST_HEADERS)
        exchange = partial(self._exchange, base, target, body, record, send)
        budget = gw.pool_policy(attempts.pool_id).retry_budget if self.spec.failover else 0
        await run_attempts(gw, attempts, record, exchange, budget=budget)

    async def _exchange(
        self,
        base: list[tuple[bytes, bytes]],
        target: str,
        body: bytes,
        record: RequestRecord,
        send: Send,
        attempt: Attempt,
    ) -> None:
        settings = self.gw.settings
        lease = attempt.lease
        headers = account_headers(lease, base)
        # The account's own pool is based at `…/backend-api/codex`; files and transcription
        # live beside it, on the shared backend pool.
        upstream, path = (
            (lease.upstream, target.removeprefix("/codex"))
            if target.startswith("/codex/")
            else (self.backend, target)
        )
        async with AsyncExitStack() as stack:
            try:
                with trio.fail_after(settings.upstream_first_byte_timeout_s):
                    response = await stack.enter_async_context(
                        upstream.request("POST", path, headers, body)
                    )
            except (trio.TooSlowError, UpstreamTransportError) as exc:
                return attempt.failed(*unreachable(exc))
            attempt.record.answered(response.status)
            if response.status < 400:
                return attempt.ended(await self._relay(lease, response, record, send))
            error_body = b""
            with trio.move_on_after(settings.upstream_idle_timeout_s):
                with contextlib.suppress(UpstreamTransportError):
                    error_body = await response.read()
            failure = classify_failure(response.status, response.headers, error_body)
            outcome, code = failure.outcome, failure.error_code
            failover = self.spec.failover and outcome.kind in m.FAILOVER_KINDS
            if failover or outcome.kind == m.UNAUTHORIZED:
                return attempt.failed(outcome, code)
            attempt.ended(outcome, code)
            record.finish(response.status, "upstream_client_error", code)
            await self._answer(send, record, response.status, response.headers, error_body)

    async def _relay(
        self, lease: m.Lease, response: UpstreamResponse, record: RequestRecord, send: Send
    ) -> m.Outcome:
        """A 2xx/3xx answer: relayed chunk by chunk (a file creation is read whole: its
        small JSON names the file id to pin)."""
        status: int = response.status
        headers: list[tuple[bytes, bytes]] = response.headers
        idle = self.gw.settings.upstream_idle_timeout_s
        if self.spec.route == "files":
            with trio.fail_after(idle):
                body = await response.read()
            self._pin_created_file(lease, record, body)
            record.finish(status, "completed")
            await self._answer(send, record, status, headers, body)
            return m.Outcome(m.OK, status, tuple(headers))
        kept = self._kept_headers(record, headers)
        # A first piece already at hand goes out in the head's write (BODY_FOLLOWS); the
        # head is never kept waiting for one.
        first = response.ready_piece()
        start = {"type": "http.response.start", "status": status, "headers": kept}
        if first:
            start[BODY_FOLLOWS] = True
        await send(start)
        del start
        record.mark_first_byte()
        if first:
            record.response_bytes += len(first)
            await send({"type": "http.response.body", "body": first, "more_body": True})
        del first
        broken: str | None = None
        with trio.move_on_after(idle) as scope:
            try:
                async for chunk in response.aiter_bytes():
                    record.response_bytes += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    scope.deadline = trio.current_time() + idle
            except UpstreamTransportError:
                broken = "upstream_stream_broken"
        if scope.cancelled_caught:
            broken = "stream_idle_timeout"
        record.finish(status, "completed" if broken is None else "stream_failed", broken)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        kind = m.OK if broken is None else m.STREAM_FAILED
        return m.Outcome(kind, status, tuple(headers))

    def _pin_created_file(self, lease: m.Lease, record: RequestRecord, body: bytes) -> None:
        try:
            file_id = orjson.loads(body).get("file_id")
        except (orjson.JSONDecodeError, AttributeError):
            file_id = None
        if isinstance(file_id, str) and file_id and record.pool_id is not None:
            pin(
                self.gw.pool_mailbox,
                record.pool_id,
                (file_key(file_id),),
                lease.account_id,
                hard=True,
                ttl=FILE_PIN_TTL_S,
            )

    def _kept_headers(
        self, record: RequestRecord, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        kept = [(k, v) for k, v in headers if k in KEPT_RESPONSE_HEADERS]
        kept.extend(relayed_response_headers(headers))
        kept.append((b"x-request-id", record.request_id.encode()))
        return kept

    async def _answer(
        self,
        send: Send,
        record: RequestRecord,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        record.mark_first_byte()
        kept = [*self._kept_headers(record, headers), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": kept})
        record.response_bytes += len(body)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def relay_routes(gateway: Gateway) -> dict[str, RelayRoute]:
    """The relayed routes by path; "finalize" is `…/files/{id}/uploaded`."""
    backend = gateway.backend_upstream
    specs = {
        FILES_PATH: RelaySpec("files", CONTROL, MAX_FILES_BODY),
        "finalize": RelaySpec("files", CONTROL, MAX_FILES_BODY, failover=False),
        TRANSCRIBE_PATH: RelaySpec("transcribe", CONTROL, None),
        REALTIME_CALLS_PATH: RelaySpec("realtime_calls", RESPONSES, None),
    }
    return {path: RelayRoute(gateway, spec, backend) for path, spec in specs.items()}
