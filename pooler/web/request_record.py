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
from typing import TYPE_CHECKING

import trio

from pooler.errors import PoolerError
from pooler.protocol.usage import TokenUsage
from pooler.web.asgi import ClientDisconnected, Scope, Send, header, send_error

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

REQUEST_LOG = logging.getLogger("pooler.requests")
_INFO = logging.INFO


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

    def elapsed_ms(self) -> float:
        return (trio.current_time() - self.started) * 1000.0

    def mark_first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = self.elapsed_ms()

    def finish(self, status: int, outcome: str, error_code: str | None = None) -> None:
        self.status_code = status
        self.outcome = outcome
        self.error_code = error_code
        self.duration_ms = self.elapsed_ms()


def start_record(gw: Gateway, scope: Scope, route: str, transport: str) -> RequestRecord:
    """The record of a request that starts now, with its (truncated) user agent."""
    record = RequestRecord(request_id=gw.new_request_id(), route=route, transport=transport)
    agent = header(scope, b"user-agent")
    record.user_agent = agent.decode("latin-1")[:200] if agent else None
    return record


def log_line(record: RequestRecord) -> None:
    """One INFO line per answered request, on every node: method, route, status, duration,
    account label, request id. Metadata only (never a body, a prompt or the key). It runs on
    every request at the default level: one level check, arguments formatted lazily."""
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
    )


class AnsweredRequest:
    """Around a whole request: its log row is written whatever happens; a PoolerError
    becomes the client's error answer (when one can still be sent) and a client that went
    away is a 499. A class, not a generator: it runs on every request."""

    __slots__ = ("_extra", "_log", "_record", "_send")

    def __init__(
        self,
        record: RequestRecord,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        log: Callable[[RequestRecord], None],
    ) -> None:
        self._record, self._send, self._extra, self._log = record, send, extra, log

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
                    await send_error(self._send, error, self._extra)
                return True
            return False
        finally:
            self._log(record)
