"""The metadata-only record of one request, filled in as it runs and handed to the LogWriter,
and the one log line each answered request gets (`log_line`).

Never holds bodies, prompts, tokens or raw keys: only what DESIGN §3 allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from pooler.errors import PoolerError
from pooler.log_format import REQUEST_LOG_NAME
from pooler.protocol.usage import TokenUsage
from pooler.web.asgi import ClientDisconnected, Scope, Send, send_error
from pooler.web.forwarded import ClientIpRules, client_address_of
from pooler.web.ingress_rules import rules_for

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import PulledBody

REQUEST_LOG = logging.getLogger(REQUEST_LOG_NAME)
_INFO = logging.INFO
MAX_CLIENT_TEXT = 200  # user agent, client request id (characters kept in memory)


@dataclass(slots=True)
class AttemptRecord:
    attempt: int
    account_id: str
    account_label: str
    started_at: float
    duration_ms: float = 0.0
    status_code: int | None = None
    outcome: str = ""
    error_code: str | None = None
    resets_at: float | None = None
    ttfb_ms: float | None = None  # the upstream's first byte (its answer's head)

    def answered(self, status: int) -> None:
        """The upstream answered this attempt with `status`: its time to first byte."""
        self.status_code = status
        self.ttfb_ms = (trio.current_time() - self.started_at) * 1000.0


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    route: str
    transport: str
    method: str = "POST"  # of the HTTP request (a websocket turn is logged as WS)
    created_at: float = field(default_factory=time.time)
    started: float = field(default_factory=trio.current_time)
    pool_id: str | None = None
    key_prefix: str | None = None
    model: str | None = None
    stream: bool = False
    status_code: int = 0
    outcome: str = "unknown"
    error_code: str | None = None
    account_id: str | None = None
    account_label: str | None = None
    retries: int = 0
    duration_ms: float = 0.0
    ttfb_ms: float | None = None
    usage: TokenUsage | None = None
    exclusions: dict[str, str] = field(default_factory=dict)
    user_agent: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    continuity: str | None = None
    continuity_from: str | None = None
    client_request_id: str | None = None
    client_ip: str | None = None
    request_bytes: int | None = None  # the body as received (before any decompression)
    response_bytes: int = 0  # body bytes sent to the client (SSE, JSON, websocket frames)
    routing: dict[str, Any] | None = None  # pooler.web.routing_story
    ended: float | None = None  # trio clock at `finish`

    def elapsed_ms(self) -> float:
        return (trio.current_time() - self.started) * 1000.0

    def mark_first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = self.elapsed_ms()

    def finish(self, status: int, outcome: str, error_code: str | None = None) -> None:
        self.status_code = status
        self.outcome = outcome
        self.error_code = error_code
        self.ended = trio.current_time()
        self.duration_ms = (self.ended - self.started) * 1000.0


def start_record(
    gw: Gateway, scope: Scope, route: str, transport: str, method: str = "POST"
) -> RequestRecord:
    """The record of a request (or websocket) that starts now, with what its client said
    about itself (`note_client`)."""
    record = RequestRecord(gw.new_request_id(), route, transport, method)
    note_client(record, scope, rules_for(gw.instance_settings).client)
    return record


def note_client(record: RequestRecord, scope: Scope, rules: ClientIpRules) -> None:
    """The user agent and the client's own request id (`x-client-request-id`: the Codex CLI
    sends its thread id; an OpenAI SDK sends it when its caller sets it), each cut to
    `MAX_CLIENT_TEXT` characters here and escaped when stored (pooler.store.text); and the
    client's address (pooler.web.forwarded: the one resolution, already made by the
    allowlist when it is on; its headers are read only through a trusted proxy). One pass
    over the headers: it runs on every request."""
    agent = request_id = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            agent = agent or value
        elif name == b"x-client-request-id":
            request_id = request_id or value
    if agent:
        record.user_agent = bytes(agent[:MAX_CLIENT_TEXT]).decode("latin-1")
    if request_id:
        record.client_request_id = bytes(request_id[:MAX_CLIENT_TEXT]).decode("latin-1")
    record.client_ip = client_address_of(scope, rules) or None


def utf8_size(text: str) -> int:
    """The size of `text` as UTF-8 on the wire (no copy for ASCII: `isascii` is O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def log_line(record: RequestRecord) -> None:
    """One INFO line per answered request, on every node: method, route, status, duration,
    account label, request id. Metadata only (never a body, a prompt or the key). It runs on
    every request at the default level: one level check, arguments formatted lazily. Its
    arguments are pooler.log_format.REQUEST_LOG_FIELDS, in that order (JSON names them)."""
    if REQUEST_LOG.isEnabledFor(_INFO):
        REQUEST_LOG.info(
            "%s %s %d %.0fms account=%s id=%s",
            "WS" if record.transport == "websocket" else record.method,
            record.route,
            record.status_code,
            record.duration_ms,
            record.account_label or "-",
            record.request_id,
        )


def reduced_record(record: RequestRecord) -> RequestRecord:
    """The record without anything a client or an upstream chose (model, user agent,
    labels, attempts...): what is stored when the database refuses the full row."""
    return dataclasses.replace(
        record,
        key_prefix=None,
        model=None,
        error_code="log_row_reduced",
        account_label=None,
        usage=None,
        exclusions={},
        user_agent=None,
        attempts=[],
        continuity=None,
        continuity_from=None,
        client_request_id=None,
        routing=None,
    )


class AnsweredRequest:
    """Around a whole request: its log row is written whatever happens; a PoolerError
    becomes the client's error answer (when one can still be sent) and a client that went
    away is a 499. `body`: the request's body, whose size as received (read or refused
    part way) is logged. A class, not a generator: it runs on every request."""

    __slots__ = ("_body", "_extra", "_log", "_record", "_send")

    def __init__(
        self,
        record: RequestRecord,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        log: Callable[[RequestRecord], None],
        body: PulledBody | None = None,
    ) -> None:
        self._record, self._send, self._extra, self._log = record, send, extra, log
        self._body = body

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        record = self._record
        try:
            if isinstance(error, ClientDisconnected):
                record.finish(499, "client_disconnected")
                return True
            if isinstance(error, PoolerError):
                record.finish(error.status, "rejected", error.code)
                with contextlib.suppress(Exception):  # the answer had started, or the client left
                    record.response_bytes += await send_error(self._send, error, self._extra)
                return True
            if (
                error is not None
                and not isinstance(error, Exception)
                and record.outcome == "unknown"
            ):
                # Cancelled (alone or in a group): the server stopped under it, as when a
                # drain's deadline passes (pooler.drain).
                record.finish(
                    200 if record.response_bytes else 503, "stream_failed", "server_stopped"
                )
            return False
        finally:
            body = self._body
            if body is not None and (body.size or body.done):
                record.request_bytes = body.size
            self._log(record)
