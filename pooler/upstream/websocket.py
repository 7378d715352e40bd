"""Upstream websockets held by an account: opened, kept alive and closed in the nursery of
the AccountActor that owns the token, while a client handler pumps frames through them.

The handler gets an `UpstreamWebsocket` and reads and writes its `connection` directly (no
extra hop per frame). The connection's reader task runs under the actor, so when the actor
crashes or is stopped the connection closes at once and the handler sees why in `ended_by`.
`release()` hands the socket back: the close handshake happens here, not on the handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import trio

from pooler.upstream.ws_client import (
    ClientWebsocket,
    WebsocketClosed,
    WebsocketProtocolError,
    WebsocketRejected,
    connect_websocket,
)


class WebsocketEnd(StrEnum):
    """Why a websocket session ended. The account side sets the first three on the
    upstream socket (`ended_by`); the client handler adds its own."""

    ACCOUNT_CRASHED = "account_crashed"
    ACCOUNT_STOPPED = "account_stopped"
    PING_TIMEOUT = "upstream_ping_timeout"
    CLIENT_GONE = "client_disconnected"
    UPSTREAM_CLOSED = "upstream_closed"
    IDLE = "idle_timeout"
    KEY_REVOKED = "key_revoked"
    LIMIT_REFUSED = "limit_refused"
    DRAINING = "server_draining"  # the process is stopping (SIGTERM): reconnect elsewhere


ACCOUNT_CRASHED = WebsocketEnd.ACCOUNT_CRASHED
ACCOUNT_STOPPED = WebsocketEnd.ACCOUNT_STOPPED
PING_TIMEOUT = WebsocketEnd.PING_TIMEOUT

DISCONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class WebsocketTarget:
    """Where and how to open one upstream websocket."""

    url: str
    headers: tuple[tuple[bytes, bytes], ...]
    max_message_size: int
    connect_timeout: float
    ping_interval: float  # <= 0: no keepalive pings


@dataclass(eq=False, slots=True)
class UpstreamWebsocket:
    connection: ClientWebsocket
    ended_by: WebsocketEnd | None = None
    released: bool = False
    # The keep-alive's wait for the next ping, cut short by `release()`: a held session
    # idles in it, so it is one cancel scope, not a scope and an Event besides.
    _waiting: trio.CancelScope | None = None

    def release(self) -> None:
        """The handler is done with the socket: close it (in the owner's nursery)."""
        self.released = True
        if self._waiting is not None:
            self._waiting.cancel()


# The failures of opening a socket that are the upstream's answer, not a bug: the caller
# gets them.
CONNECT_FAILURES = (WebsocketRejected, WebsocketProtocolError, OSError, trio.TooSlowError)


async def hold_upstream_websocket(
    target: WebsocketTarget,
    deliver: Callable[[UpstreamWebsocket], bool],
    fail: Callable[[Exception], object],
    held: set[UpstreamWebsocket],
) -> None:
    """Open the socket, hand it over (`deliver`; False: nobody took it), keep it alive with
    pings until it is released or dies, then close it. A connect failure goes to `fail`.
    While open, the socket is in `held`, where its owner can mark why it ended."""
    try:
        with trio.fail_after(target.connect_timeout):
            connection = await connect_websocket(
                target.url, target.headers, max_message_size=target.max_message_size
            )
    except CONNECT_FAILURES as exc:
        fail(exc)
        return
    socket = UpstreamWebsocket(connection)
    interval = target.ping_interval
    try:
        delivered = deliver(socket)
        # Held for the socket's life, this frame keeps nothing it no longer needs: the
        # reply slot (a memory channel) and the target's headers, ~2 KiB a held session
        # (ops/bench/idle_memory.py --kind websocket).
        del target, deliver, fail
        if delivered:
            held.add(socket)
            await _keep_alive(socket, interval)
    except trio.Cancelled:
        # The owner stops (a crash has said so already): marked before closing the stream
        # wakes the handler's read.
        socket.ended_by = socket.ended_by or ACCOUNT_STOPPED
        raise
    finally:
        held.discard(socket)
        # Under cancellation this still closes the TCP stream before re-raising.
        with trio.move_on_after(DISCONNECT_TIMEOUT_S):
            await connection.aclose()


async def _keep_alive(socket: UpstreamWebsocket, interval: float) -> None:
    """Until released: a ping every `interval` (<= 0: none); a pong missing for as long
    ends the socket. (The pong is read by the handler's pump, the socket's one reader.)
    One wait, for the next ping or the release, in one cancel scope that `release()`
    cancels: a held session idles in it."""
    connection = socket.connection
    while not socket.released:
        pinging = interval > 0 and not connection.is_closed
        deadline = trio.current_time() + interval if pinging else math.inf
        with trio.CancelScope(deadline=deadline) as socket._waiting:
            await trio.sleep_forever()
        socket._waiting = None
        if socket.released or not pinging:
            continue
        try:
            with trio.move_on_after(interval) as waiting:
                await connection.ping()
        except WebsocketClosed:
            interval = 0  # no more pings: wait for the release
            continue
        if waiting.cancelled_caught:
            socket.ended_by = socket.ended_by or PING_TIMEOUT
            return  # closing the stream wakes the handler, which releases the socket
