"""A lean client websocket for the upstream: one TCP stream, `wsproto`, no reader task.

A session has exactly one reader, its upstream→client pump, so frames are parsed in that
task as it asks for them: no background task and no queue between the socket and the
pump (each costs memory per held session, and a task hop per frame). Control frames are
handled on the way: a ping is answered, a pong wakes `ping()`, a close is answered and
ends the connection. Writers (the client→upstream pump, keepalive pings, the close) share
one lock.

A held session idles in its read, so what the read keeps matters (`ops/bench/idle_memory.py
--kind websocket`). Over plain TCP it waits for the socket with `trio.lowlevel.wait_readable`
and makes one recv(2) on the socket trio wraps, as `pooler.upstream.http1._read` does:
`SocketStream.receive_some`'s layers (three coroutines and a context manager) are not kept
for as long as the session idles (the socket comes from `pooler.trio_socket`, which
refuses to load if trio moved it). The wsproto connection's event queue is cut down
(`pooler.lean_queues`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from socket import socket
from typing import cast
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from pooler.lean_queues import lean_events
from pooler.trio_socket import plain_socket

RECEIVE_SIZE = 64 * 1024
MAX_REJECTION_BODY = 64 * 1024
Headers = Sequence[tuple[bytes, bytes]]


class WebsocketClosed(Exception):
    """The connection is over; `code` is the peer's close code (None: no close frame)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"websocket closed ({code})")
        self.code = code


class WebsocketRejected(Exception):
    """The server answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"websocket upgrade refused ({status})")
        self.status = status
        self.headers = headers
        self.body = body


class WebsocketProtocolError(Exception):
    """The server broke the websocket protocol during the handshake."""


class ClientWebsocket:
    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Connection,
        handshake_headers: list[tuple[bytes, bytes]],
        max_message_size: int,
    ) -> None:
        self.handshake_headers = handshake_headers
        self._stream = stream
        # The socket itself, read directly (`get_message`), when the stream is plain TCP.
        self._plain: socket | None = plain_socket(stream)
        self._protocol = lean_events(protocol)
        self._max_message_size = max_message_size
        self._send_lock = trio.Lock()
        self._parts: list[str] | list[bytes] = []
        self._size = 0
        self._pong: trio.Event | None = None
        self.is_closed = False
        self.close_code: int | None = None  # the peer's (or our) close code, once closed

    # --- reading (the one reader) ---------------------------------------------------

    async def get_message(self) -> str | bytes:
        """The next text or binary message; raises WebsocketClosed when there is none."""
        protocol = self._protocol
        while True:
            for event in protocol.events():
                message = await self._on_event(event)
                if message is not None:
                    return message
            if self.is_closed:
                raise WebsocketClosed(self.close_code)
            sock = self._plain
            try:
                if sock is None:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                else:
                    # Waited for here, not in a helper: a held session idles in this
                    # wait, and keeps every frame suspended above it (module doc).
                    if sock.fileno() == -1:  # closed: no fd to wait on
                        raise trio.ClosedResourceError
                    await trio.lowlevel.wait_readable(sock)
                    received = _recv(sock)
                    if received is None:  # woken with nothing to read after all
                        continue
                    data = received
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""  # a reset or a closed socket ends the session as EOF does
            if not data:
                self._end(None)
                raise WebsocketClosed(None)
            try:
                protocol.receive_data(cast(bytes, data))  # a SocketStream gives bytes
            except RemoteProtocolError:
                await self._abort()
                raise WebsocketClosed(1002) from None

    def take_handshake_headers(self) -> list[tuple[bytes, bytes]]:
        """The 101's headers, once: a held session does not keep them (the upstream's
        x-codex headers run to ~2 KiB)."""
        headers, self.handshake_headers = self.handshake_headers, []
        return headers

    async def _on_event(self, event: Event) -> str | bytes | None:
        if isinstance(event, TextMessage | BytesMessage):
            self._size += len(event.data)
            if self._size > self._max_message_size:
                await self.aclose(1009)
                raise WebsocketClosed(1009)
            self._parts.append(event.data)  # type: ignore[arg-type]
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, [], 0
            joiner = "" if isinstance(event, TextMessage) else b""
            return joiner.join(parts)  # type: ignore[arg-type]
        if isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, Pong):
            if self._pong is not None:
                self._pong.set()
        elif isinstance(event, CloseConnection):
            if self._protocol.state == ConnectionState.REMOTE_CLOSING:
                await self._send(event.response())
            self._end(event.code)
            await self._close_stream()
            raise WebsocketClosed(event.code)
        return None

    # --- writing ------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        if self.is_closed:
            raise WebsocketClosed(self.close_code)
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self._send(event)

    async def ping(self) -> None:
        """Send a ping and wait for its pong (which the reader receives)."""
        pong = self._pong = trio.Event()
        try:
            await self._send(Ping(os.urandom(4)))
            await pong.wait()
        finally:
            if self._pong is pong:  # not kept until the next ping (~0.3 KiB a held session)
                self._pong = None

    async def aclose(self, code: int = 1000) -> None:
        """Say goodbye (a close frame) and close the TCP stream. Idempotent; under
        cancellation the stream is still closed."""
        try:
            if self._protocol.state == ConnectionState.OPEN:
                await self._send(CloseConnection(code))
        except WebsocketClosed:
            pass
        finally:
            self._end(code)
            await self._close_stream()

    async def _send(self, event: Event) -> None:
        try:
            data = self._protocol.send(event)
        except Exception as exc:  # wsproto: the connection is not in a state to send
            raise WebsocketClosed(None) from exc
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._end(None)
                raise WebsocketClosed(None) from None

    def _end(self, code: int | None) -> None:
        if not self.is_closed:
            self.is_closed, self.close_code = True, code
        if self._pong is not None:
            self._pong.set()  # nobody waits for a pong that cannot come

    async def _abort(self) -> None:
        self._end(None)
        await self._close_stream()

    async def _close_stream(self) -> None:
        await self._stream.aclose()


def _recv(sock: socket) -> bytes | None:
    """One recv(2) of up to RECEIVE_SIZE bytes; None when there was nothing after all."""
    try:
        return sock.recv(RECEIVE_SIZE)
    except BlockingIOError:
        return None


async def connect_websocket(
    url: str, headers: Headers, *, max_message_size: int
) -> ClientWebsocket:
    """Open `ws(s)://host[:port]/path` with `headers` on the upgrade request.

    Raises WebsocketRejected (an HTTP answer), WebsocketProtocolError, OSError."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    authority = host if port == (443 if secure else 80) else f"{host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    try:
        request = Request(host=authority, target=target, extra_headers=list(headers))
        return await _handshake(stream, request, max_message_size)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _handshake(
    stream: trio.abc.Stream, request: Request, max_message_size: int
) -> ClientWebsocket:
    protocol = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(protocol.send(request))
    rejected: tuple[int, list[tuple[bytes, bytes]]] | None = None
    body = bytearray()
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise WebsocketProtocolError("the server closed the connection during the upgrade")
        try:
            protocol.receive_data(bytes(data))
            events = list(protocol.events())
        except RemoteProtocolError as exc:
            raise WebsocketProtocolError(str(exc)) from None
        for event in events:
            if isinstance(event, AcceptConnection):
                accepted = list(event.extra_headers)
                # The session needs only the established connection: the handshake (an h11
                # connection, the upgrade request, the account's headers; ~2 KiB) is not
                # kept for its life (ops/bench/idle_memory.py --kind websocket).
                established = protocol.connection
                assert established is not None  # set by the 101 that gave AcceptConnection
                return ClientWebsocket(stream, established, accepted, max_message_size)
            if isinstance(event, RejectConnection):
                rejected = (event.status_code, list(event.headers))
                if not event.has_body:
                    raise WebsocketRejected(*rejected, b"")
            elif isinstance(event, RejectData) and rejected is not None:
                body += event.data[: MAX_REJECTION_BODY - len(body)]
                if event.body_finished:
                    raise WebsocketRejected(*rejected, bytes(body))
