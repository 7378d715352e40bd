"""Websocket Responses: `GET /backend-api/codex/responses` with Upgrade (protocol §1.3).

One upstream websocket per client websocket, on one account leased for the socket's life.
Text frames are relayed both ways untouched; only the frames the gateway accounts for are
parsed (terminal events, `codex.rate_limits`, `response.created`, wrapped error frames).
Each client `response.create` starts a turn with its own request-log row. Frames are never
stored or logged. A client frame the gateway cannot read (not a JSON object with a string
`type`, or a `response.create` without a string `model`) is refused in band with the HTTP
route's error (`invalid_json`, ...) and a log row, never relayed: the key's policy must see
every turn the upstream could start.

When no account can open an upstream websocket the handshake is answered 426, so the
Codex CLI falls back to HTTP at once (a 426 is the one refusal it does not retry).

The leased account's AccountActor opens the upstream socket in its own nursery, pings it
and closes it (`pooler.upstream.websocket`); the handler pumps frames through it directly.
So the socket ends with its account: 1011 when the actor crashes, 1012 when the account is
removed; and with its Pool API key: 1008 when a key-cache reload no longer holds the key.
A turn refused for the account's limits blocks the account at once and ends the socket
after the refusal is relayed, so the client's next turn reconnects to another account.
Each socket holds a slot of the "websocket" bulkhead for its life (a full one answers the
handshake 503).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, call
from pooler.errors import BadRequest, InvalidJson, PoolerError, ServerOverloaded
from pooler.protocol.ratelimit import (
    RateLimitSnapshot,
    merge_snapshots,
    parse_rate_limit_headers,
)
from pooler.protocol.responses_request import parse_object
from pooler.protocol.stream_accounting import StreamAccounting
from pooler.routing.circuit import RESPONSES
from pooler.upstream.websocket import (
    ACCOUNT_CRASHED,
    ACCOUNT_STOPPED,
    PING_TIMEOUT,
    UpstreamWebsocket,
    WebsocketTarget,
)
from pooler.upstream.ws_client import WebsocketClosed, WebsocketProtocolError, WebsocketRejected
from pooler.web.asgi import Receive, Scope, Send, header
from pooler.web.attempts import Attempt, run_attempts
from pooler.web.continuity import continuity_keys, response_key
from pooler.web.key_policy import apply_key_policy
from pooler.web.keys import KeyInfo, PoolInfo
from pooler.web.leasing import LeaseAttempts, account_headers, continuity_digest, pin
from pooler.web.request_record import RequestRecord
from pooler.web.upstream_exchange import (
    FORWARDED_REQUEST_HEADERS,
    classify_failure,
    relayed_response_headers,
)

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.responses_ws")

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_TRY_AGAIN = (
    1000,
    1008,
    1011,
    1012,
    1013,
)
BETA = (b"openai-beta", b"responses_websockets=2026-02-06")
UPGRADE_REFUSED_BODY = (
    b'{"error":{"message":"websocket transport is not available; use HTTP",'
    b'"type":"invalid_request_error","code":"websocket_unsupported","param":null}}'
)
CLIENT_GONE, UPSTREAM_CLOSED, IDLE = "client_disconnected", "upstream_closed", "idle_timeout"
KEY_REVOKED, LIMIT_REFUSED = "key_revoked", "limit_refused"
# How each way of ending closes the client socket (the rest: 1000).
CLOSE_CODES = {
    KEY_REVOKED: CLOSE_POLICY,
    ACCOUNT_CRASHED: CLOSE_INTERNAL,
    PING_TIMEOUT: CLOSE_INTERNAL,
    ACCOUNT_STOPPED: CLOSE_RESTART,
}
# Ends that say nothing about the account's health: its lease is released as neutral.
NEUTRAL_ENDS = frozenset({KEY_REVOKED, ACCOUNT_CRASHED, ACCOUNT_STOPPED, LIMIT_REFUSED})
LIMIT_KINDS = (m.USAGE_LIMIT, m.RATE_LIMITED)
CODEX_ONLY_FRAME = '"type":"codex.'
OPEN_REPLY_MARGIN_S = 1.0  # the actor's own connect deadline comes first


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


def upstream_ws_url(base_url: str) -> str:
    """`http(s)://host/backend-api/codex` -> `ws(s)://host/backend-api/codex/responses`."""
    scheme, _, rest = base_url.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest.rstrip("/") + "/responses"


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    close_code: int = CLOSE_POLICY,
) -> None:
    """Answer the handshake with an HTTP error if the server can, else close it."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": close_code})
        return
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


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
class _Socket:
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
    ended: str | None = None
    upstream_code: int | None = None
    turns: int = 0
    abandoned: bool = False  # the client left in the middle of a turn
    public: bool = False  # a /v1 client: Codex-only frames (`codex.*`) are not relayed
    idle: trio.CancelScope = field(default_factory=trio.CancelScope)

    def touch(self) -> None:
        self.idle.deadline = trio.current_time() + self.gw.settings.websocket_idle_timeout_s

    def start_turn(self, text: str) -> str | PoolerError:
        """The frame to forward (the key's policy applied to a `response.create`), or the
        refusal of the frame: by the key's policy, or because it is not a frame the gateway
        can read (logged here; the caller answers with an error frame)."""
        try:
            payload = client_frame(text)
        except PoolerError as refusal:
            record = self._turn_record()
            record.finish(refusal.status, "rejected", refusal.code)
            self.gw.log_request(record)
            return refusal
        if payload is None:
            return text
        if self.turn is not None:
            self.end_turn(200, "stream_failed", "turn_superseded")
        record = self._turn_record()
        model = payload.get("model")
        record.model = model if isinstance(model, str) else None
        try:
            if apply_key_policy(self.key, payload):
                text = dump_frame(payload)
            if isinstance(model, str):  # one without is the upstream's to refuse
                self.gw.catalog.check_model(self.attempts.pool_id, model)
        except PoolerError as refusal:
            record.finish(refusal.status, "rejected", refusal.code)
            self.gw.log_request(record)
            return refusal
        record.stream = True
        record.account_id, record.account_label = self.lease.account_id, self.lease.label
        self.turns += 1
        self.turn = record
        pool_id, account_id = self.attempts.pool_id, self.lease.account_id
        self.accounting = TurnAccounting((self.gw.supervisor, pool_id, account_id))
        hard, soft = continuity_keys(payload, self.scope)
        pin(self.gw.supervisor, pool_id, (*((hard,) if hard else ()), *soft), account_id)
        return text

    def _turn_record(self) -> RequestRecord:
        base = self.template
        record = RequestRecord(
            request_id=self.gw.new_request_id(), route="responses", transport="websocket"
        )
        record.pool_id, record.key_prefix, record.user_agent = (
            base.pool_id,
            base.key_prefix,
            base.user_agent,
        )
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


class _UpgradeRefused(Exception):
    """The upstream answered the upgrade 426: it does not do websockets (no failover)."""


@dataclass(slots=True)
class _Client:
    """The client side of one websocket handshake, as the attempt loop's exchange needs it."""

    scope: Scope
    receive: Receive
    send: Send
    key: KeyInfo
    attempts: LeaseAttempts
    template: RequestRecord
    forwarded: tuple[tuple[bytes, bytes], ...]
    accepted: bool = False  # the client socket was accepted (an upstream one opened)


Authenticate = Callable[["Gateway", Scope], tuple[KeyInfo, PoolInfo]]


def authenticate_key(gw: Gateway, scope: Scope) -> tuple[KeyInfo, PoolInfo]:
    """A Codex client: its Pool API key (Bearer)."""
    return gw.keys.authenticate(header(scope, b"authorization"))


class ResponsesWebsocketRoute:
    """`authenticate`: who may open a socket here; `public`: a `/v1` surface, whose clients
    get no Codex-only frames and lose their sockets when the Pool turns `/v1` off."""

    def __init__(
        self, gateway: Gateway, authenticate: Authenticate = authenticate_key, public: bool = False
    ) -> None:
        self.gw = gateway
        self.authenticate = authenticate
        self.public = public
        self.url = upstream_ws_url(f"{gateway.config.upstream_base_url}/backend-api/codex")
        self._open: dict[str, set[_Socket]] = {}  # open sockets by Pool API key id
        gateway.keys.on_replace.append(self._close_revoked)

    def _close_revoked(self) -> None:
        """After a key-cache reload: close (1008) the sockets of keys no longer valid, and
        the `/v1` sockets of Pools that turned `/v1` off."""
        keys = self.gw.keys
        for key_id, sockets in self._open.items():
            revoked = not keys.is_valid(key_id)
            for socket in sockets:
                if revoked or (socket.public and not keys.v1_enabled(socket.key.pool_id)):
                    socket.ended = socket.ended or KEY_REVOKED
                    socket.idle.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        gw = self.gw
        record = RequestRecord(
            request_id=gw.new_request_id(), route="responses", transport="websocket"
        )
        agent = header(scope, b"user-agent")
        record.user_agent = agent.decode("latin-1")[:200] if agent else None
        try:
            key, pool = self.authenticate(gw, scope)
        except PoolerError as error:
            record.finish(error.status, "rejected", error.code)
            gw.log_request(record)
            await refuse(scope, send, error.status, error.body_bytes(), error.headers())
            return
        record.pool_id, record.key_prefix = pool.pool_id, key.prefix
        _, soft_keys = continuity_keys({}, scope)
        attempts = LeaseAttempts(pool.pool_id, soft_keys, route_class=RESPONSES)
        try:
            # One slot of the "websocket" bulkhead for the socket's whole life.
            async with gw.admission.admit("websocket"):
                served = await self._attempts(scope, receive, send, attempts, record, key)
        except ServerOverloaded as error:
            record.finish(error.status, "rejected", error.code)
            gw.log_request(record)
            body, headers = error.body_bytes(), error.headers()
            await refuse(scope, send, error.status, body, headers, CLOSE_TRY_AGAIN)
            return
        except Exception:
            log.exception("unhandled error on a websocket Responses connection")
            served = True  # whatever was sent, the handshake is no longer ours to answer
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_INTERNAL})
        if not served:
            record.finish(426, "rejected", "websocket_upgrade_refused")
            gw.log_request(record)
            headers = [(b"content-type", b"application/json")]
            await refuse(scope, send, 426, UPGRADE_REFUSED_BODY, headers)

    async def _attempts(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        attempts: LeaseAttempts,
        template: RequestRecord,
        key: KeyInfo,
    ) -> bool:
        """Open the upstream websocket on the first account that takes it and serve the
        socket; False when none would (the caller answers 426)."""
        gw = self.gw
        forwarded = tuple(
            (k, v)
            for k, v in scope["headers"]
            if k in FORWARDED_REQUEST_HEADERS and k != b"openai-beta"
        )
        client = _Client(scope, receive, send, key, attempts, template, forwarded)
        budget = gw.pool_policy(attempts.pool_id).retry_budget
        try:
            await run_attempts(
                gw, attempts, template, partial(self._exchange, client), budget=budget
            )
        except (PoolerError, _UpgradeRefused):
            if client.accepted:  # the handshake is no longer ours to answer
                raise
            return False
        return True

    async def _exchange(self, client: _Client, attempt: Attempt) -> None:
        """Open the upstream socket on the attempt's lease, then serve the client socket
        for its life; the lease is released with how the socket ended."""
        lease = attempt.lease
        try:
            upstream = await self._open_upstream(lease, client.forwarded)
        except BaseException as exc:
            outcome, code = _open_failure(exc)
            if outcome is None:
                raise
            if code == "websocket_upgrade_refused":  # this upstream does not do websockets
                attempt.ended(outcome, code)
                raise _UpgradeRefused from None
            return attempt.failed(outcome, code)
        socket = _Socket(
            self.gw, client.scope, client.key, lease, client.attempts, client.template, upstream
        )
        socket.public = self.public
        client.accepted = True
        try:
            await self._serve(socket, client.receive, client.send)
        finally:
            upstream.release()
            attempt.ended(socket.outcome())

    async def _open_upstream(
        self, lease: m.Lease, forwarded: tuple[tuple[bytes, bytes], ...]
    ) -> UpstreamWebsocket:
        """Ask the leased account's actor to open the upstream socket in its nursery."""
        settings = self.gw.settings
        target = WebsocketTarget(
            self.url,
            tuple(account_headers(lease, (*forwarded, BETA))),
            max_message_size=settings.max_body_bytes,
            connect_timeout=settings.upstream_connect_timeout_s,
            ping_interval=settings.websocket_ping_interval_s,
        )
        return await call(
            lease.mailbox,
            lambda reply: m.OpenWebsocket(target, reply),
            timeout=settings.upstream_connect_timeout_s + OPEN_REPLY_MARGIN_S,
        )

    async def _serve(self, socket: _Socket, receive: Receive, send: Send) -> None:
        gw = self.gw
        handshake = list(socket.upstream.connection.handshake_headers)
        turn_state = header({"headers": handshake}, b"x-codex-turn-state")
        if turn_state:
            key = continuity_digest("turn_state", turn_state.decode("latin-1"))
            pin(gw.supervisor, socket.attempts.pool_id, (key,), socket.lease.account_id)
        # The upgrade's x-codex headers go with the first turn's evidence.
        socket.rate_limits = parse_rate_limit_headers(handshake, time.time())
        accept_headers = relayed_response_headers(
            handshake, gw.models_etag(socket.attempts.pool_id)
        )
        await send({"type": "websocket.accept", "headers": accept_headers})
        sockets = self._open.setdefault(socket.key.key_id, set())
        sockets.add(socket)
        try:
            async with trio.open_nursery() as pumps:
                socket.idle = pumps.cancel_scope
                socket.touch()
                if not gw.keys.is_valid(socket.key.key_id):  # revoked while the socket opened
                    socket.ended = KEY_REVOKED
                    pumps.cancel_scope.cancel()
                pumps.start_soon(self._client_to_upstream, socket, receive, send)
                await self._upstream_to_client(socket, send)
        finally:
            sockets.discard(socket)
            if not sockets and self._open.get(socket.key.key_id) is sockets:
                del self._open[socket.key.key_id]
            if socket.ended is None:
                socket.ended = IDLE
            if socket.turn is not None:
                if socket.ended == CLIENT_GONE:
                    socket.abandoned = True
                    socket.end_turn(499, CLIENT_GONE)
                elif socket.ended in (KEY_REVOKED, ACCOUNT_CRASHED, ACCOUNT_STOPPED, PING_TIMEOUT):
                    socket.end_turn(200, "stream_failed", socket.ended)
                else:
                    code = (
                        "stream_idle_timeout" if socket.ended == IDLE else "upstream_stream_closed"
                    )
                    socket.end_turn(200, "stream_failed", code)
        if socket.ended != CLIENT_GONE:
            close = CLOSE_CODES.get(socket.ended, CLOSE_NORMAL)
            if socket.ended == UPSTREAM_CLOSED and socket.upstream_code != CLOSE_NORMAL:
                close = CLOSE_INTERNAL
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": close})
        # The caller releases the upstream socket; its actor closes it.

    def _upstream_closed(self, socket: _Socket, closed: WebsocketClosed) -> None:
        # The account's side says why it closed the socket (its actor crashed or stopped, a
        # ping went unanswered); otherwise the upstream closed it.
        socket.ended = socket.ended or socket.upstream.ended_by or UPSTREAM_CLOSED
        socket.upstream_code = closed.code
        socket.idle.cancel()

    async def _client_to_upstream(self, socket: _Socket, receive: Receive, send: Send) -> None:
        upstream = socket.upstream.connection
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    socket.ended = socket.ended or CLIENT_GONE
                    break
                if kind != "websocket.receive":
                    continue
                socket.touch()
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                forwarded = socket.start_turn(text)
                if isinstance(forwarded, PoolerError):  # refused by the key's policy
                    await send(
                        {"type": "websocket.send", "text": refusal_frame(forwarded).decode()}
                    )
                    continue
                await upstream.send_message(forwarded)
        except WebsocketClosed as closed:
            self._upstream_closed(socket, closed)
        socket.idle.cancel()

    async def _upstream_to_client(self, socket: _Socket, send: Send) -> None:
        upstream = socket.upstream.connection
        try:
            while True:
                frame = await upstream.get_message()
                socket.touch()
                if isinstance(frame, bytes):
                    await send({"type": "websocket.send", "bytes": frame})
                    continue
                socket.on_upstream_frame(frame)  # first: a response id is pinned before relay
                if not (socket.public and CODEX_ONLY_FRAME in frame[:40]):
                    await send({"type": "websocket.send", "text": frame})
                socket.after_upstream_frame()
        except WebsocketClosed as closed:
            self._upstream_closed(socket, closed)
        socket.idle.cancel()


def _open_failure(exc: BaseException) -> tuple[m.Outcome | None, str]:
    """How a failed upstream open counts against its account, and its exclusion code;
    (None, _) for an exception that is not an open failure (re-raised)."""
    if isinstance(exc, WebsocketRejected):
        if exc.status == 426:
            return m.Outcome(m.CANCELLED), "websocket_upgrade_refused"
        failure = classify_failure(exc.status, exc.headers, exc.body)
        return failure.outcome, failure.error_code
    if isinstance(exc, trio.TooSlowError | CallTimeout):
        return m.Outcome(m.TIMEOUT), "upstream_connect_timeout"
    if isinstance(exc, WebsocketProtocolError | OSError | ActorDead):
        return m.Outcome(m.TRANSPORT_ERROR), f"upstream_{type(exc).__name__}"
    return None, ""
