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
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, call
from pooler.errors import PoolerError, ServerOverloaded, WebsocketUnsupported
from pooler.protocol.ratelimit import parse_rate_limit_headers
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
from pooler.web.attempts import Attempt, note_continuity, run_attempts
from pooler.web.backend_codex.ws_session import (
    CLIENT_GONE,
    CLOSE_CODES,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CODEX_ONLY_FRAME,
    DRAINING,
    IDLE,
    KEY_REVOKED,
    UPSTREAM_CLOSED,
    ClientSocket,
    refusal_frame,
)
from pooler.web.continuity import continuity_keys
from pooler.web.keys import KeyInfo, PoolInfo
from pooler.web.leasing import LeaseAttempts, account_headers, continuity_digest, pin
from pooler.web.request_record import RequestRecord, start_record, utf8_size
from pooler.web.upstream_exchange import (
    FORWARDED_REQUEST_HEADERS,
    classify_failure,
    relayed_response_headers,
)

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.responses_ws")
BETA = (b"openai-beta", b"responses_websockets=2026-02-06")
OPEN_REPLY_MARGIN_S = 1.0  # the actor's own connect deadline comes first
UPGRADE_REFUSED = "websocket_upgrade_refused"


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
        self._open: dict[str, set[ClientSocket]] = {}  # open sockets by Pool API key id
        gateway.keys.on_replace.append(self._close_revoked)
        gateway.drain.on_start.append(self._close_idle)
        gateway.drain.on_deadline.append(self._close_all)

    def open_sessions(self) -> Counter[str]:
        """The client sockets open on this route now, by Pool id (this node only)."""
        return Counter(
            socket.attempts.pool_id for sockets in self._open.values() for socket in sockets
        )

    def _close_revoked(self) -> None:
        """After a key-cache reload: close (1008) the sockets of keys no longer valid, and
        the `/v1` sockets of Pools that turned `/v1` off."""
        keys = self.gw.keys
        for sockets in self._open.values():
            for socket in sockets:
                v1_off = socket.public and not keys.v1_enabled(socket.key.pool_id)
                if not keys.is_valid(socket.key) or v1_off:
                    socket.ended = socket.ended or KEY_REVOKED
                    socket.idle.cancel()

    def _close_idle(self) -> None:
        """The process drains: sockets between turns close now (1012); one in a turn closes
        when its turn ends (ClientSocket.end_turn)."""
        for sockets in self._open.values():
            for socket in sockets:
                if socket.turn is None:
                    socket.close_for_drain()

    def _close_all(self) -> None:
        """The drain's time is up: every socket closes (1012), a turn still open is logged
        as cut."""
        for sockets in self._open.values():
            for socket in sockets:
                socket.close_for_drain()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        gw = self.gw
        record = start_record(gw, scope, "responses", "websocket")
        try:
            key, pool = self.authenticate(gw, scope)
        except PoolerError as error:
            await self._refuse(record, scope, send, error, error.code)
            return
        record.pool_id, record.key_prefix = pool.pool_id, key.prefix
        _, soft_keys = continuity_keys({}, scope)
        attempts = LeaseAttempts(pool.pool_id, soft_keys, route_class=RESPONSES)
        try:
            # One slot of the "websocket" bulkhead for the socket's whole life.
            async with gw.admission.admit("websocket"):
                served = await self._attempts(scope, receive, send, attempts, record, key)
        except ServerOverloaded as error:
            await self._refuse(record, scope, send, error, error.code, CLOSE_TRY_AGAIN)
            return
        except Exception:
            log.exception("unhandled error on a websocket Responses connection")
            served = True  # whatever was sent, the handshake is no longer ours to answer
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_INTERNAL})
        if not served:
            await self._refuse(record, scope, send, WebsocketUnsupported(), UPGRADE_REFUSED)

    async def _refuse(
        self,
        record: RequestRecord,
        scope: Scope,
        send: Send,
        error: PoolerError,
        code: str,
        close_code: int = CLOSE_POLICY,
    ) -> None:
        """Log the refused handshake, then refuse it (an HTTP answer when the server can)."""
        body = error.body_bytes()
        record.finish(error.status, "rejected", code)
        if "websocket.http.response" in scope.get("extensions", {}):
            record.response_bytes = len(body)
        self.gw.log_request(record)
        await refuse(scope, send, error.status, body, error.headers(), close_code)

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
            if isinstance(exc, WebsocketRejected):
                attempt.record.answered(exc.status)
            if code == UPGRADE_REFUSED:  # this upstream does not do websockets
                attempt.ended(outcome, code)
                raise _UpgradeRefused from None
            return attempt.failed(outcome, code)
        attempt.record.answered(101)
        # Each turn's row tells how the socket's account was chosen.
        note_continuity(client.template, client.attempts, attempt.record)
        socket = ClientSocket(
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

    def _accept_headers(self, socket: ClientSocket) -> list[tuple[bytes, bytes]]:
        """The headers of the client's 101, from the upstream's; its turn state pinned and
        its x-codex headers kept for the first turn's evidence. The upstream's headers are
        taken from its connection: a held session keeps none of them."""
        gw = self.gw
        handshake = socket.upstream.connection.take_handshake_headers()
        turn_state = header({"headers": handshake}, b"x-codex-turn-state")
        if turn_state:
            key = continuity_digest("turn_state", turn_state.decode("latin-1"))
            pin(gw.pool_mailbox, socket.attempts.pool_id, (key,), socket.lease.account_id)
        socket.rate_limits = parse_rate_limit_headers(handshake, time.time())
        return relayed_response_headers(handshake, gw.models_etag(socket.attempts.pool_id))

    async def _serve(self, socket: ClientSocket, receive: Receive, send: Send) -> None:
        """Accept the client socket and pump frames both ways until the session ends. The
        upstream→client pump runs in this frame, not in a coroutine of its own: a held
        session idles in it, and keeps every frame suspended there (~0.25 KiB each)."""
        gw = self.gw
        await send({"type": "websocket.accept", "headers": self._accept_headers(socket)})
        sockets = self._open.setdefault(socket.key.key_id, set())
        sockets.add(socket)
        try:
            async with trio.open_nursery() as pumps:
                socket.idle = pumps.cancel_scope
                socket.touch()
                if not gw.keys.is_valid(socket.key):  # revoked while the socket opened
                    socket.ended = KEY_REVOKED
                    pumps.cancel_scope.cancel()
                elif gw.drain.deadline_passed:  # opened in the accept grace, too late
                    socket.close_for_drain()
                pumps.start_soon(self._client_to_upstream, socket, receive, send)
                upstream = socket.upstream.connection
                try:
                    while True:
                        frame = await upstream.get_message()
                        socket.touch()
                        turn = socket.turn
                        if isinstance(frame, bytes):
                            if turn is not None:
                                turn.response_bytes += len(frame)
                            await send({"type": "websocket.send", "bytes": frame})
                            continue
                        # First: a response id is pinned before the frame is relayed.
                        socket.on_upstream_frame(frame)
                        if not (socket.public and CODEX_ONLY_FRAME in frame[:40]):
                            if turn is not None:
                                turn.response_bytes += utf8_size(frame)
                            await send({"type": "websocket.send", "text": frame})
                        socket.after_upstream_frame()
                except WebsocketClosed as closed:
                    self._upstream_closed(socket, closed)
                socket.idle.cancel()
        finally:
            self._session_over(socket, sockets)
        if socket.ended != CLIENT_GONE:
            close = CLOSE_CODES.get(socket.ended or IDLE, CLOSE_NORMAL)
            if socket.ended == UPSTREAM_CLOSED and socket.upstream_code != CLOSE_NORMAL:
                close = CLOSE_INTERNAL
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": close})
        # The caller releases the upstream socket; its actor closes it.

    def _session_over(self, socket: ClientSocket, sockets: set[ClientSocket]) -> None:
        """The session's pumps are over: it is no longer open, and a turn still open is
        logged with how the session ended."""
        sockets.discard(socket)
        if not sockets and self._open.get(socket.key.key_id) is sockets:
            del self._open[socket.key.key_id]
        if socket.ended is None:
            socket.ended = IDLE
        if socket.turn is not None:
            if socket.ended == CLIENT_GONE:
                socket.abandoned = True
                socket.end_turn(499, CLIENT_GONE)
            elif socket.ended in (
                KEY_REVOKED,
                ACCOUNT_CRASHED,
                ACCOUNT_STOPPED,
                PING_TIMEOUT,
                DRAINING,
            ):
                socket.end_turn(200, "stream_failed", socket.ended)
            else:
                code = "stream_idle_timeout" if socket.ended == IDLE else "upstream_stream_closed"
                socket.end_turn(200, "stream_failed", code)

    def _upstream_closed(self, socket: ClientSocket, closed: WebsocketClosed) -> None:
        # The account's side says why it closed the socket (its actor crashed or stopped, a
        # ping went unanswered); otherwise the upstream closed it.
        socket.ended = socket.ended or socket.upstream.ended_by or UPSTREAM_CLOSED
        socket.upstream_code = closed.code
        socket.idle.cancel()

    async def _client_to_upstream(self, socket: ClientSocket, receive: Receive, send: Send) -> None:
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
                    raw = message.get("bytes") or b""
                    text, size = raw.decode("utf-8", "replace"), len(raw)
                else:
                    size = utf8_size(text)
                forwarded = socket.start_turn(text, size)
                if isinstance(forwarded, PoolerError):  # refused by the key's policy
                    await send(
                        {"type": "websocket.send", "text": refusal_frame(forwarded).decode()}
                    )
                    continue
                await upstream.send_message(forwarded)
        except WebsocketClosed as closed:
            self._upstream_closed(socket, closed)
        socket.idle.cancel()


def _open_failure(exc: BaseException) -> tuple[m.Outcome | None, str]:
    """How a failed upstream open counts against its account, and its exclusion code;
    (None, _) for an exception that is not an open failure (re-raised)."""
    if isinstance(exc, WebsocketRejected):
        if exc.status == 426:
            return m.Outcome(m.CANCELLED), UPGRADE_REFUSED
        failure = classify_failure(exc.status, exc.headers, exc.body)
        return failure.outcome, failure.error_code
    if isinstance(exc, trio.TooSlowError | CallTimeout):
        return m.Outcome(m.TIMEOUT), "upstream_connect_timeout"
    if isinstance(exc, WebsocketProtocolError | OSError | ActorDead):
        return m.Outcome(m.TRANSPORT_ERROR), f"upstream_{type(exc).__name__}"
    return None, ""
