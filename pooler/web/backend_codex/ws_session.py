"""One client websocket of the Responses route, as a session: the frames the gateway
reads (`client_frame`), each `response.create` turn with its own request-log row and
accounting (`TurnAccounting`), the quota evidence delivered to the account after each
turn, and the outcome its lease is released with. No I/O: the route
(responses_ws.py) pumps the frames and calls in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.actors import messages as m
from pooler.errors import BadRequest, InvalidJson, PoolerError
from pooler.protocol.ratelimit import (
    RateLimitSnapshot,
    merge_snapshots,
    parse_rate_limit_headers,
)
from pooler.protocol.responses_request import parse_object
from pooler.protocol.stream_accounting import StreamAccounting
from pooler.upstream.websocket import (
    ACCOUNT_CRASHED,
    ACCOUNT_STOPPED,
    PING_TIMEOUT,
    UpstreamWebsocket,
    WebsocketEnd,
)
from pooler.web.asgi import Scope
from pooler.web.continuity import continuity_keys, response_key
from pooler.web.key_policy import apply_key_policy
from pooler.web.keys import KeyInfo
from pooler.web.leasing import LeaseAttempts, pin
from pooler.web.request_record import RequestRecord
from pooler.web.upstream_exchange import classify_failure

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_TRY_AGAIN = (
    1000,
    1008,
    1011,
    1012,
    1013,
)
CLIENT_GONE, UPSTREAM_CLOSED, IDLE = (
    WebsocketEnd.CLIENT_GONE,
    WebsocketEnd.UPSTREAM_CLOSED,
    WebsocketEnd.IDLE,
)
KEY_REVOKED, LIMIT_REFUSED = WebsocketEnd.KEY_REVOKED, WebsocketEnd.LIMIT_REFUSED
DRAINING = WebsocketEnd.DRAINING
# How each way of ending closes the client socket (the rest: 1000).
CLOSE_CODES = {
    KEY_REVOKED: CLOSE_POLICY,
    ACCOUNT_CRASHED: CLOSE_INTERNAL,
    PING_TIMEOUT: CLOSE_INTERNAL,
    ACCOUNT_STOPPED: CLOSE_RESTART,
    DRAINING: CLOSE_RESTART,  # the Codex CLI reconnects, through the balancer, elsewhere
}
# Ends that say nothing about the account's health: its lease is released as neutral.
NEUTRAL_ENDS = frozenset({KEY_REVOKED, ACCOUNT_CRASHED, ACCOUNT_STOPPED, LIMIT_REFUSED, DRAINING})
LIMIT_KINDS = (m.USAGE_LIMIT, m.RATE_LIMITED)
CODEX_ONLY_FRAME = '"type":"codex.'


def client_frame(text: str) -> dict[str, Any] | None:
    """A client frame read for the gateway: the payload of a `response.create` (its key
    policy still to apply), or None for another kind of frame (relayed as sent).

    A frame that is not a JSON object with a string `type` is refused (InvalidJson or
    BadRequest, as the HTTP route refuses such a body), never relayed: the gateway cannot
    tell whether it starts a turn, and a parser upstream that is more lenient than orjson
    (`NaN`, lone surrogates, deeper nesting) could read one the key's policy never saw."""
    payload = parse_object(text, "the frame")
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise BadRequest("a frame's 'type' is required and must be a string", param="type")
    if kind != "response.create":
        return None
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    return payload


def dump_frame(payload: dict[str, Any]) -> str:
    """A frame the key's policy changed, written back. orjson reads 1,024 levels of nesting
    but writes only 254: a frame between the two is refused, not a crash of the socket."""
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidJson("the frame is nested too deeply") from exc


def refusal_frame(error: PoolerError) -> bytes:
    """A turn refused by the gateway, as the upstream words its own refusals."""
    return orjson.dumps({"type": "error", "status": error.status, **error.body()})


class TurnAccounting(StreamAccounting):
    """One turn's accounting from its websocket frames (one event per frame); pins the
    response id to the account as soon as the upstream names it."""

    def __init__(self, pin_to: tuple[Any, str, str]) -> None:
        super().__init__()
        self._pin_to = pin_to
        self.error_status: int | None = None
        self.error_outcome: m.Outcome | None = None
        self.error_headers: list[tuple[bytes, bytes]] = []

    @property
    def ended(self) -> bool:
        return self.terminal_type is not None or self.error_status is not None

    def feed_frame(self, text: str) -> None:
        if '"type":"error"' in text[:40]:
            self._on_error_frame(text)
            return
        known = self.response_id
        self._on_event(text)
        if self.response_id is not None and self.response_id != known:
            supervisor, pool_id, account_id = self._pin_to
            pin(
                supervisor,
                pool_id,
                (response_key(self.response_id),),
                account_id,
                hard=True,
            )

    def _on_error_frame(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        status = frame.get("status", frame.get("status_code")) if isinstance(frame, dict) else None
        if not isinstance(status, int) or status < 400:
            return
        raw_headers = frame.get("headers")
        headers = (
            [(str(k).lower().encode(), str(v).encode()) for k, v in raw_headers.items()]
            if isinstance(raw_headers, dict)
            else []
        )
        body = json.dumps({"error": frame.get("error")}).encode()
        failure = classify_failure(status, headers, body)
        self.error_status, self.error_code = status, failure.error_code
        self.error_headers = headers
        self.error_outcome = failure.outcome


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set while open
class ClientSocket:
    """One client websocket: its lease, its open turn, what ended it, and the quota
    evidence not yet delivered to its account (each turn's goes at the turn's end)."""

    gw: Gateway
    scope: Scope
    key: KeyInfo
    lease: m.Lease
    attempts: LeaseAttempts
    template: RequestRecord
    upstream: UpstreamWebsocket
    turn: RequestRecord | None = None
    accounting: TurnAccounting | None = None
    rate_limits: RateLimitSnapshot | None = None
    refusal: m.Outcome | None = None  # a server or auth failure seen in an error frame
    ended: WebsocketEnd | None = None
    upstream_code: int | None = None
    turns: int = 0
    abandoned: bool = False  # the client left in the middle of a turn
    public: bool = False  # a /v1 client: Codex-only frames (`codex.*`) are not relayed
    idle: trio.CancelScope = field(default_factory=trio.CancelScope)

    def touch(self) -> None:
        self.idle.deadline = trio.current_time() + self.gw.settings.websocket_idle_timeout_s

    def start_turn(self, text: str, size: int = 0) -> str | PoolerError:
        """The frame to forward (the key's policy applied to a `response.create`), or the
        refusal of the frame: by the key's policy, or because it is not a frame the gateway
        can read (logged here; the caller answers with an error frame). `size`: the frame's
        bytes as received (a turn's request bytes; another frame's count to the open turn)."""
        try:
            payload = client_frame(text)
        except PoolerError as refusal:
            self._refused(self._turn_record(size), refusal)
            return refusal
        if payload is None:
            if self.turn is not None:
                self.turn.request_bytes = (self.turn.request_bytes or 0) + size
            return text
        if self.turn is not None:
            self.end_turn(200, "stream_failed", "turn_superseded")
        record = self._turn_record(size)
        model = payload.get("model")
        record.model = model if isinstance(model, str) else None
        try:
            if apply_key_policy(self.key, payload):
                text = dump_frame(payload)
            if isinstance(model, str):  # one without is the upstream's to refuse
                self.gw.catalog.check_model(self.attempts.pool_id, model)
        except PoolerError as refusal:
            self._refused(record, refusal)
            return refusal
        record.stream = True
        record.account_id, record.account_label = self.lease.account_id, self.lease.label
        self.turns += 1
        self.turn = record
        pool_id, account_id = self.attempts.pool_id, self.lease.account_id
        self.accounting = TurnAccounting((self.gw.pool_mailbox, pool_id, account_id))
        hard, soft = continuity_keys(payload, self.scope)
        pin(self.gw.pool_mailbox, pool_id, (*((hard,) if hard else ()), *soft), account_id)
        return text

    def _refused(self, record: RequestRecord, refusal: PoolerError) -> None:
        record.finish(refusal.status, "rejected", refusal.code)
        record.response_bytes = len(refusal_frame(refusal))  # the error frame the caller sends
        self.gw.log_request(record)

    def _turn_record(self, size: int) -> RequestRecord:
        """A turn's record: what the handshake said (the client, the Pool, the key) and how
        the socket's account was chosen (its routing story and continuity)."""
        base = self.template
        record = RequestRecord(
            request_id=self.gw.new_request_id(), route="responses", transport="websocket"
        )
        record.pool_id, record.key_prefix, record.user_agent = (
            base.pool_id,
            base.key_prefix,
            base.user_agent,
        )
        record.client_request_id, record.client_ip = base.client_request_id, base.client_ip
        record.routing, record.continuity = base.routing, base.continuity
        record.continuity_from = base.continuity_from
        record.request_bytes = size
        return record

    def on_upstream_frame(self, text: str) -> None:
        accounting = self.accounting
        if accounting is None:
            if '"type":"codex.rate_limits"' in text[:40]:
                stray = TurnAccounting((None, "", ""))
                stray.feed_frame(text)
                self.rate_limits = merge_snapshots(self.rate_limits, stray.rate_limits)
            return
        accounting.feed_frame(text)
        if self.turn is not None:
            self.turn.mark_first_byte()

    def after_upstream_frame(self) -> None:
        accounting = self.accounting
        if accounting is None or self.turn is None or not accounting.ended:
            return
        if accounting.error_status is not None:
            refusal = accounting.error_outcome
            if refusal is not None and refusal.kind in LIMIT_KINDS:
                # The account is out of quota (or busy) now, not when the socket ends; and
                # the socket ends, so that the client's next turn finds another account.
                self.lease.mailbox.try_send(m.TurnRefused(self.lease.lease_id, refusal))
                self.ended = self.ended or LIMIT_REFUSED
                self.idle.cancel()
            elif refusal is not None and refusal.kind != m.CLIENT_ERROR:
                self.refusal = refusal
            self.end_turn(accounting.error_status, "upstream_client_error", accounting.error_code)
        elif accounting.completed:
            self.end_turn(200, "completed")
        else:
            self.end_turn(200, "failed", accounting.error_code)

    def end_turn(self, status: int, outcome: str, error_code: str | None = None) -> None:
        record, accounting = self.turn, self.accounting
        if record is None or accounting is None:
            return
        record.usage = accounting.usage
        now = time.time()
        evidence = merge_snapshots(self.rate_limits, accounting.rate_limits)
        if accounting.error_headers:
            evidence = merge_snapshots(
                evidence, parse_rate_limit_headers(accounting.error_headers, now)
            )
        # Delivered now, not at the socket's end: the account's quota follows each turn.
        delivered = evidence is not None and self.lease.mailbox.try_send(
            m.TurnEvidence(evidence, now)
        )
        self.rate_limits = None if delivered else evidence
        record.finish(status, outcome, error_code)
        self.gw.log_request(record)
        self.turn, self.accounting = None, None
        if self.gw.drain.draining:  # between turns now: the socket closes (1012)
            self.close_for_drain()

    def close_for_drain(self) -> None:
        self.ended = self.ended or DRAINING
        self.idle.cancel()

    def outcome(self) -> m.Outcome:
        """What the socket's lease is released with (the last turn's evidence included)."""
        if self.refusal is not None:
            return replace(self.refusal, rate_limits=self.rate_limits)
        if self.ended in NEUTRAL_ENDS or self.abandoned:
            kind = m.CANCELLED
        elif self.ended == PING_TIMEOUT or (
            self.ended == UPSTREAM_CLOSED and self.upstream_code != CLOSE_NORMAL
        ):
            kind = m.STREAM_FAILED
        else:
            kind = m.OK
        return m.Outcome(kind, 101, rate_limits=self.rate_limits)
