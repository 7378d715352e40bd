"""Websocket Responses: `GET /backend-api/codex/responses` with Upgrade (protocol §1.3).

One upstream websocket per client websocket, on one account leased for the socket's life.
Text frames are relayed both ways untouched; only the frames the gateway accounts for are
parsed (terminal events, `codex.rate_limits`, `response.created`, wrapped error frames).
Each client `response.create` starts a turn with its own request-log row. Frames are never
stored or logged.

When no account can open an upstream websocket the handshake is answered 426, so the
Codex CLI falls back to HTTP at once (a 426 is the one refusal it does not retry).

The pumps live in a nursery owned by the handler, not (yet) in the AccountActor's; the
socket ends with its account's actor (1011, on the supervisor's crash event) and with its
Pool API key (1008, when a key-cache reload no longer holds the key). Each socket holds a
slot of the "websocket" bulkhead for its life (a full one answers the handshake 503).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import trio
import trio_websocket

from pooler.actors import messages as m
from pooler.errors import PoolerError, ServerOverloaded
from pooler.protocol.ratelimit import (
    RateLimitSnapshot,
    merge_snapshots,
    parse_rate_limit_headers,
)
from pooler.protocol.stream_accounting import StreamAccounting
from pooler.routing.circuit import RESPONSES
from pooler.web.asgi import Receive, Scope, Send, header
from pooler.web.backend_codex.responses import continuity_keys
from pooler.web.backend_codex.upstream_exchange import (
    FORWARDED_REQUEST_HEADERS,
    classify_failure,
    relayed_response_headers,
)
from pooler.web.leasing import LeaseAttempts, continuity_digest, lease_account, pin, release
from pooler.web.request_record import RequestRecord

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.responses_ws")

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_AGAIN = 1000, 1008, 1011, 1013
BETA = (b"openai-beta", b"responses_websockets=2026-02-06")
UPGRADE_REFUSED_BODY = (
    b'{"error":{"message":"websocket transport is not available; use HTTP",'
    b'"type":"invalid_request_error","code":"websocket_unsupported","param":null}}'
)
CLIENT_GONE, UPSTREAM_CLOSED, IDLE = "client_disconnected", "upstream_closed", "idle_timeout"
KEY_REVOKED, ACCOUNT_CRASHED = "key_revoked", "account_crashed"
PING_TIMEOUT = "upstream_ping_timeout"
DISCONNECT_TIMEOUT_S = 5.0


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
                (continuity_digest("response_id", self.response_id),),
                account_id,
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
    key_id: str
    lease: m.Lease
    attempts: LeaseAttempts
    template: RequestRecord
    turn: RequestRecord | None = None
    accounting: TurnAccounting | None = None
    rate_limits: RateLimitSnapshot | None = None
    refusal: m.Outcome | None = None  # a limit or auth refusal seen in an error frame
    ended: str | None = None
    upstream_code: int | None = None
    turns: int = 0
    idle: trio.CancelScope = field(default_factory=trio.CancelScope)

    def touch(self) -> None:
        self.idle.deadline = trio.current_time() + self.gw.settings.websocket_idle_timeout_s

    def start_turn(self, text: str) -> None:
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict) or payload.get("type") != "response.create":
            return
        if self.turn is not None:
            self.end_turn(200, "stream_failed", "turn_superseded")
        base = self.template
        record = RequestRecord(
            request_id=self.gw.new_request_id(), route="responses", transport="websocket"
        )
        record.pool_id, record.key_prefix, record.user_agent = (
            base.pool_id,
            base.key_prefix,
            base.user_agent,
        )
        model = payload.get("model")
        record.model = model if isinstance(model, str) else None
        record.stream = True
        record.account_id, record.account_label = self.lease.account_id, self.lease.label
        self.turns += 1
        self.turn = record
        pool_id, account_id = self.attempts.pool_id, self.lease.account_id
        self.accounting = TurnAccounting((self.gw.supervisor, pool_id, account_id))
        hard, soft = continuity_keys(payload, self.scope)
        pin(self.gw.supervisor, pool_id, (*((hard,) if hard else ()), *soft), account_id)

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
            if (
                accounting.error_outcome is not None
                and accounting.error_outcome.kind != m.CLIENT_ERROR
            ):
                self.refusal = accounting.error_outcome
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
        if self.refusal is not None:
            return self.refusal
        kind = (
            m.STREAM_FAILED
            if self.ended == PING_TIMEOUT
            or (self.ended == UPSTREAM_CLOSED and self.upstream_code != CLOSE_NORMAL)
            else m.OK
        )
        return m.Outcome(kind, 101, rate_limits=self.rate_limits)


class ResponsesWebsocketRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.url = upstream_ws_url(f"{gateway.config.upstream_base_url}/backend-api/codex")
        self._open: dict[str, set[_Socket]] = {}  # open sockets by Pool API key id
        gateway.keys.on_replace.append(self._close_revoked)

    def _close_revoked(self) -> None:
        """After a key-cache reload: close (1008) the sockets of keys no longer valid."""
        keys = self.gw.keys
        for key_id in [k for k in self._open if not keys.is_valid(k)]:
            for socket in self._open[key_id]:
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
            key, pool = gw.keys.authenticate(header(scope, b"authorization"))
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
                served = await self._attempts(scope, receive, send, attempts, record, key.key_id)
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
        key_id: str,
    ) -> bool:
        """Open the upstream websocket on the first account that takes it and serve the
        socket; False when none would (the caller answers 426)."""
        gw = self.gw
        settings = gw.settings
        forwarded = [
            (k, v)
            for k, v in scope["headers"]
            if k in FORWARDED_REQUEST_HEADERS and k != b"openai-beta"
        ]
        for _ in range(1 + gw.pool_policy(attempts.pool_id).retry_budget):
            try:
                lease = await lease_account(
                    gw.supervisor, attempts, timeout=settings.lease_timeout_s
                )
            except PoolerError:
                return False
            if lease is None:
                return False
            headers = [
                *forwarded,
                BETA,
                (b"authorization", b"Bearer " + lease.access_token.encode()),
                (b"chatgpt-account-id", lease.chatgpt_account_id.encode()),
            ]
            socket: _Socket | None = None
            outcome, code = m.Outcome(m.CANCELLED), "cancelled"
            try:
                async with trio_websocket.open_websocket_url(
                    self.url,
                    extra_headers=headers,
                    max_message_size=settings.max_body_bytes,
                    connect_timeout=settings.upstream_connect_timeout_s,
                    disconnect_timeout=DISCONNECT_TIMEOUT_S,
                ) as upstream:
                    socket = _Socket(gw, scope, key_id, lease, attempts, template)
                    await self._serve(socket, upstream, receive, send)
            except trio_websocket.ConnectionRejected as rejected:
                if socket is not None:
                    raise
                if rejected.status_code == 426:  # this upstream does not do websockets
                    release(lease, m.Outcome(m.CANCELLED))
                    return False
                failure = classify_failure(
                    rejected.status_code, list(rejected.headers or ()), rejected.body or b""
                )
                outcome, code = failure.outcome, failure.error_code
            except (trio_websocket.HandshakeError, OSError) as exc:
                if socket is None:
                    outcome, code = m.Outcome(m.TRANSPORT_ERROR), f"upstream_{type(exc).__name__}"
            except BaseException:
                release(lease, outcome if socket is None else socket.outcome())
                raise
            if socket is not None:
                release(lease, socket.outcome())
                return True
            release(lease, outcome)
            attempts.tried.add(lease.account_id)
            attempts.exclusions[lease.label] = code
        return False

    async def _serve(
        self,
        socket: _Socket,
        upstream: trio_websocket.WebSocketConnection,
        receive: Receive,
        send: Send,
    ) -> None:
        gw = self.gw
        turn_state = header({"headers": upstream.handshake_headers}, b"x-codex-turn-state")
        if turn_state:
            key = continuity_digest("turn_state", turn_state.decode("latin-1"))
            pin(gw.supervisor, socket.attempts.pool_id, (key,), socket.lease.account_id)
        accept_headers = relayed_response_headers(list(upstream.handshake_headers))
        # The upgrade's x-codex headers go with the first turn's evidence.
        socket.rate_limits = parse_rate_limit_headers(list(upstream.handshake_headers), time.time())
        handle = gw.pool_supervisor.accounts.get(socket.lease.account_id)
        crashed = handle.crashed if handle is not None else trio.Event()
        await send({"type": "websocket.accept", "headers": accept_headers})
        sockets = self._open.setdefault(socket.key_id, set())
        sockets.add(socket)
        try:
            async with trio.open_nursery() as pumps:
                socket.idle = pumps.cancel_scope
                socket.touch()
                if not gw.keys.is_valid(socket.key_id):  # revoked while the socket opened
                    socket.ended = KEY_REVOKED
                    pumps.cancel_scope.cancel()
                pumps.start_soon(self._client_to_upstream, socket, upstream, receive)
                pumps.start_soon(self._upstream_to_client, socket, upstream, send)
                pumps.start_soon(self._watch_account, socket, crashed)
                pumps.start_soon(self._keepalive, socket, upstream)
        finally:
            sockets.discard(socket)
            if not sockets and self._open.get(socket.key_id) is sockets:
                del self._open[socket.key_id]
            if socket.ended is None:
                socket.ended = IDLE
            if socket.turn is not None:
                if socket.ended == CLIENT_GONE:
                    socket.end_turn(499, CLIENT_GONE)
                elif socket.ended in (KEY_REVOKED, ACCOUNT_CRASHED, PING_TIMEOUT):
                    socket.end_turn(200, "stream_failed", socket.ended)
                else:
                    code = (
                        "stream_idle_timeout" if socket.ended == IDLE else "upstream_stream_closed"
                    )
                    socket.end_turn(200, "stream_failed", code)
        if socket.ended != CLIENT_GONE:
            close = CLOSE_NORMAL
            failed = socket.ended == UPSTREAM_CLOSED and socket.upstream_code != CLOSE_NORMAL
            if failed or socket.ended in (ACCOUNT_CRASHED, PING_TIMEOUT):
                close = CLOSE_INTERNAL
            elif socket.ended == KEY_REVOKED:
                close = CLOSE_POLICY
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": close})
        # Leaving open_websocket_url closes the upstream socket (at most DISCONNECT_TIMEOUT_S).

    async def _client_to_upstream(
        self, socket: _Socket, upstream: trio_websocket.WebSocketConnection, receive: Receive
    ) -> None:
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
                socket.start_turn(text)
                await upstream.send_message(text)
        except trio_websocket.ConnectionClosed as closed:
            socket.ended = socket.ended or UPSTREAM_CLOSED
            socket.upstream_code = closed.reason.code if closed.reason else None
        socket.idle.cancel()

    async def _upstream_to_client(
        self, socket: _Socket, upstream: trio_websocket.WebSocketConnection, send: Send
    ) -> None:
        try:
            while True:
                frame = await upstream.get_message()
                socket.touch()
                if isinstance(frame, bytes):
                    await send({"type": "websocket.send", "bytes": frame})
                    continue
                socket.on_upstream_frame(frame)  # first: a response id is pinned before relay
                await send({"type": "websocket.send", "text": frame})
                socket.after_upstream_frame()
        except trio_websocket.ConnectionClosed as closed:
            socket.ended = socket.ended or UPSTREAM_CLOSED
            socket.upstream_code = closed.reason.code if closed.reason else None
        socket.idle.cancel()

    async def _watch_account(self, socket: _Socket, crashed: trio.Event) -> None:
        """End the socket (1011) if the leased account's actor crashes: the restarted actor
        knows nothing of this socket, which must not be left hanging on it."""
        await crashed.wait()
        socket.ended = socket.ended or ACCOUNT_CRASHED
        socket.idle.cancel()

    async def _keepalive(
        self, socket: _Socket, upstream: trio_websocket.WebSocketConnection
    ) -> None:
        """Ping the upstream every `websocket_ping_interval_s`; a pong missing for as long
        ends the socket (1011). Pings are not activity: they leave the idle deadline alone."""
        interval = self.gw.settings.websocket_ping_interval_s
        if interval <= 0:
            return
        try:
            while True:
                await trio.sleep(interval)
                with trio.move_on_after(interval) as waiting:
                    await upstream.ping()
                if waiting.cancelled_caught:
                    socket.ended = socket.ended or PING_TIMEOUT
                    socket.idle.cancel()
                    return
        except trio_websocket.ConnectionClosed:
            return  # the pumps see the close and end the socket
