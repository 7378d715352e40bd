"""Keep-alive HTTP/1.1 client for one upstream origin, on h11 over Trio streams.

This is the request hot path (DESIGN §9): each AccountActor owns an `UpstreamPool`, and a
handler relays the response body chunk by chunk as it comes off the socket.

Theory of operation:

- A connection is either *active* (owned by one `request` context) or *idle* (in a LIFO
  list, its h11 state reset for the next cycle). A semaphore of `max_connections` slots
  bounds active connections; a socket is only opened when no idle one is left, so active
  plus idle never exceeds it either.
- On exit a connection goes back to the idle list only if the response was read to its
  end (or the rest of it is already buffered) and h11 says both sides may go on. Any
  other exit — an error, a cancellation, a caller that stops early — closes the socket
  synchronously: cleanup never awaits, so it cannot be interrupted and nothing leaks.
- An idle connection that became readable was closed by its peer and is dropped. One
  that still turns out dead before any response byte is retried once on a fresh socket.
- No deadlines here: callers wrap requests in `trio.fail_after` / `move_on_after`.
- Errors leave as `pooler.upstream.errors`; h11, OSError and trio stream errors stay in.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from urllib.parse import urlsplit

import h11
import trio

from pooler.upstream.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadError,
)

__all__ = ["UpstreamPool", "UpstreamResponse"]

_READ_SIZE = 64 * 1024
_MAX_HEAD_SIZE = 64 * 1024
_SEND_TOGETHER = 64 * 1024  # a body up to this size goes out in one write with the head
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)
_BODYLESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
_FORBIDDEN = (b"\r", b"\n", b"\x00")


class _Stale(Exception):
    """A reused connection died before sending a response byte: retry on a fresh one."""


class _Connection:
    __slots__ = ("h11", "reused", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_SIZE)
        self.reused = False

    def close(self) -> None:
        # Synchronous on purpose, so it is safe in any cleanup path. A TLS connection is
        # dropped without close_notify, which HTTPS permits.
        self.sock.close()

    def is_dead(self) -> bool:
        # An idle connection has nothing to say: readable means EOF, a reset or junk.
        return self.sock.fileno() < 0 or self.sock.is_readable()


class UpstreamResponse:
    """Status and headers of a response; the body is read off the socket on demand."""

    __slots__ = ("_conn", "_done", "_eof", "headers", "status")

    def __init__(self, conn: _Connection, event: h11.Response) -> None:
        self.status: int = event.status_code
        self.headers: list[tuple[bytes, bytes]] = list(event.headers)  # names lowercased
        self._conn = conn
        self._done = False
        self._eof = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it comes off the socket (de-chunked): each piece is what one read
        brought, never held back for a later one. An SSE upstream that sends several events
        close together gives them in one piece, so they cost one write to the client."""
        return self

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while (chunk := await self._next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def _next_chunk(self) -> bytes | None:
        while not self._done:
            event = self._next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif type(event) is h11.Data:
                if event.data:
                    return self._with_buffered(event.data)
            elif type(event) is h11.EndOfMessage:
                self._done = True
            else:
                raise UpstreamReadError("upstream connection closed mid-response")
        return None

    def _with_buffered(self, first: bytes | bytearray) -> bytes:
        """`first` and the body data already received after it (no I/O): the chunks of one
        read as one piece. The end of the body, if buffered too, is noted."""
        parts: list[bytes | bytearray] | None = None
        h = self._conn.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError:
                break  # raised again, in order, by the next read
            if type(event) is h11.Data:
                if parts is None:
                    parts = [first]
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                self._done = True
                break
            else:  # NEED_DATA (nothing more buffered); PAUSED is not reached mid-body
                break
        return bytes(first) if parts is None else b"".join(parts)  # h11 hands out bytearrays

    def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self._conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            if self._eof:
                raise UpstreamReadError("upstream closed the connection mid-response") from exc
            raise UpstreamProtocolError(f"invalid HTTP/1.1 from upstream: {exc}") from exc

    async def _receive(self) -> None:
        try:
            data = await self._conn.stream.receive_some(_READ_SIZE)
        except _STREAM_ERRORS as exc:
            raise UpstreamReadError(f"upstream connection broke mid-response: {exc}") from exc
        if not data:
            self._eof = True
        self._conn.h11.receive_data(bytes(data))

    def _read_to_end_buffered(self) -> bool:
        """Whether the body ends within what is already buffered (consumed without I/O)."""
        try:
            while not self._done:
                event = self._conn.h11.next_event()
                if type(event) is h11.EndOfMessage:
                    self._done = True
                elif type(event) is not h11.Data:
                    return False
        except h11.RemoteProtocolError:
            return False
        return True


class UpstreamPool:
    """Keep-alive connections to one origin; `request` is the only way to use them."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 64,
        max_idle: int = 16,
        ssl_context: ssl.SSLContext | None = None,
        connect_to: str | None = None,
    ) -> None:
        """`connect_to`: the address to open connections to, when the caller has resolved
        and checked the base URL's host itself (its name still goes in Host and TLS)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream base URL: {base_url!r}")
        if max_connections < 1 or max_idle < 0:
            raise ValueError("max_connections must be >= 1 and max_idle >= 0")
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or default_port
        self._connect_to = connect_to or self._host
        host = f"[{self._host}]" if ":" in self._host else self._host
        host_header = host if self._port == default_port else f"{host}:{self._port}"
        self._host_header = host_header.encode("idna")
        self._prefix = parts.path.rstrip("/").encode("ascii")
        if tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl_context = ssl_context if tls else None
        self._slots = trio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._active: set[_Connection] = set()
        self._closed = False

    @property
    def active_connections(self) -> int:
        return len(self._active)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """`async with pool.request(...) as response:` — see the module docstring.

        The pool adds Host and Content-Length (the caller must not); `target` is joined
        to the base URL's path. Raises ValueError for a malformed request line or header.
        """
        return _RequestContext(self, self._build_request(method, target, headers, body), body)

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests fail to connect."""
        self._closed = True
        for conn in (*self._idle, *self._active):
            conn.close()
        self._idle.clear()
        await trio.lowlevel.checkpoint()

    def _build_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> h11.Request:
        method_b = method.encode("ascii")
        target_b = self._prefix + target.encode("ascii")
        all_headers = [(b"host", self._host_header), *headers]
        if body or method_b not in _BODYLESS_METHODS:
            all_headers.append((b"content-length", b"%d" % len(body)))
        # h11's own validation runs a regex per header (~25 µs a request); checking for
        # the bytes that could split the head is enough to rule out header injection.
        line = method_b + b" " + target_b
        blob = b"".join([name + b":" + value for name, value in all_headers])
        if line.count(b" ") != 1 or any(bad in blob or bad in line for bad in _FORBIDDEN):
            raise ValueError("request line or header contains a forbidden character")
        try:
            return h11.Request(method=method_b, target=target_b, headers=all_headers, _parsed=True)
        except h11.LocalProtocolError as exc:
            raise ValueError(f"invalid upstream request: {exc}") from exc

    async def _open(
        self, request: h11.Request, body: bytes
    ) -> tuple[_Connection, UpstreamResponse]:
        conn = self._take_idle()
        if conn is not None:
            try:
                return conn, await self._exchange(conn, request, body)
            except _Stale:
                pass  # already dropped; go again on a fresh connection, once
        conn = await self._connect()
        return conn, await self._exchange(conn, request, body)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_dead():
                conn.close()
                continue
            self._active.add(conn)
            return conn
        return None

    async def _connect(self) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(self._connect_to, self._port)
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {self._origin}: {exc}") from exc
        stream: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            stream = trio.SSLStream(
                tcp, self._ssl_context, server_hostname=self._host, https_compatible=True
            )
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                tcp.socket.close()
                raise UpstreamConnectError(f"TLS with {self._origin} failed: {exc}") from exc
            except BaseException:
                tcp.socket.close()
                raise
        conn = _Connection(stream, tcp.socket)
        self._active.add(conn)
        return conn

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: bytes
    ) -> UpstreamResponse:
        try:
            await self._send(conn, request, body)
            return await self._read_head(conn)
        except BaseException:
            self._active.discard(conn)
            conn.close()
            raise

    async def _send(self, conn: _Connection, request: h11.Request, body: bytes) -> None:
        h = conn.h11
        head = h.send(request) or b""
        if body:
            body = h.send(h11.Data(data=body)) or b""  # Content-Length framing: unchanged
        tail = h.send(h11.EndOfMessage()) or b""
        try:
            if len(body) <= _SEND_TOGETHER:
                await conn.stream.send_all(head + body + tail)
            else:
                await conn.stream.send_all(head)
                await conn.stream.send_all(body)
        except _STREAM_ERRORS as exc:
            if conn.reused:
                raise _Stale from exc
            raise UpstreamReadError(f"upstream connection broke while sending: {exc}") from exc

    async def _read_head(self, conn: _Connection) -> UpstreamResponse:
        h = conn.h11
        received = False
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamProtocolError(f"invalid HTTP/1.1 from upstream: {exc}") from exc
            if type(event) is h11.Response:
                return UpstreamResponse(conn, event)
            if event is not h11.NEED_DATA:
                continue  # a 1xx informational response: the final one follows
            try:
                data = await conn.stream.receive_some(_READ_SIZE)
            except _STREAM_ERRORS as exc:
                if conn.reused and not received:
                    raise _Stale from exc
                raise UpstreamReadError(f"upstream connection broke: {exc}") from exc
            if not data:
                if conn.reused and not received:
                    raise _Stale
                raise UpstreamReadError("upstream closed the connection before responding")
            received = True
            h.receive_data(bytes(data))

    def _finish(self, conn: _Connection, response: UpstreamResponse) -> None:
        self._active.discard(conn)
        h = conn.h11
        if (
            not self._closed
            and len(self._idle) < self._max_idle
            and response._read_to_end_buffered()
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
        ):
            h.start_next_cycle()
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()


class _RequestContext:
    """What `UpstreamPool.request` returns: holds a slot and a connection while open."""

    __slots__ = ("_body", "_conn", "_pool", "_request", "_response")

    def __init__(self, pool: UpstreamPool, request: h11.Request, body: bytes) -> None:
        self._pool = pool
        self._request = request
        self._body = body

    async def __aenter__(self) -> UpstreamResponse:
        pool = self._pool
        await pool._slots.acquire()
        try:
            if pool._closed:
                raise UpstreamConnectError("the upstream pool is closed")
            self._conn, self._response = await pool._open(self._request, self._body)
        except BaseException:
            pool._slots.release()
            raise
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self._pool
        pool._finish(self._conn, self._response)
        pool._slots.release()
