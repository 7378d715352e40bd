"""Keep-alive HTTP/1.1 client for one upstream origin, on httptools (llhttp) over Trio streams.

This is the request hot path (DESIGN §9): each AccountActor owns an `UpstreamPool`, and a
handler relays the response body chunk by chunk as it comes off the socket.

Theory of operation:

- A connection is either *active* (owned by one `request` context) or *idle* (in a LIFO
  list). A semaphore of `max_connections` slots bounds active connections; a socket is only
  opened when no idle one is left, so active plus idle never exceeds it either.
- Each exchange has its own parser: llhttp, in C, parses everything one read brought in a
  single `feed_data` call (h11 ran Python per event, ~15 % of a short request's CPU). The
  request head is written directly.
- On the way to an answer's first byte the requesting task yields only to wait for the
  response head: a free slot is taken, and the request written (one non-blocking send(2)
  over plain TCP, the stream's `send_all` for what the socket did not take), without the
  turns of the event loop trio's `acquire` and `send_all` yield; and the first body read
  takes what the socket already holds (an SSE stream's first event, often come while the
  caller answered the head) without waiting to be told it is readable.
- On exit a connection goes back to the idle list only if the response was read to its
  end (or the rest of it is already buffered), it may be kept (HTTP/1.1, no
  `Connection: close` either way, framed by a length or chunks, not by EOF) and nothing
  came after it. Any other exit — an error, a cancellation, a caller that stops early —
  closes the socket synchronously: cleanup never awaits, so it cannot be interrupted and
  nothing leaks.
- An idle connection that became readable was closed by its peer and is dropped. One
  that still turns out dead before any response byte is retried once on a fresh socket.
- 1xx informational responses are skipped. A response head (with any 1xx before it), a
  chunk extension or a trailer section over `_MAX_HEAD_SIZE` is refused, as is any
  Transfer-Encoding but a single `chunked` (llhttp would read such a body to EOF).
- No deadlines here: callers wrap requests in `trio.fail_after` / `move_on_after`.
- A read over plain TCP waits for the socket with `trio.lowlevel.wait_readable` (a body
  read in the iterator's own frame, `_read`'s code inlined: one coroutine fewer per
  relayed read), then makes one recv(2) on the socket trio wraps: what
  `SocketStream.receive_some` does, without its layers (a context manager and three
  coroutines kept for as long as a stream idles) and without the recv(2) it tries first,
  which fails on an SSE stream whose next event has not come, and on a response head read
  right after its request (only the first body read tries first: see above). This reaches
  into trio's socket (through `pooler.trio_socket`, which refuses to load if trio moved
  it). TLS goes through the `SSLStream`.
- Errors leave as `pooler.upstream.errors`; httptools, OSError and trio stream errors stay
  in.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from socket import socket
from types import TracebackType
from urllib.parse import urlsplit

import httptools
import trio

from pooler.trio_socket import plain_socket
from pooler.upstream.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadError,
    UpstreamTransportError,
)

__all__ = ["UpstreamPool", "UpstreamResponse"]

_READ_SIZE = 64 * 1024
_MAX_HEAD_SIZE = 64 * 1024
_SEND_TOGETHER = 64 * 1024  # a body up to this size goes out in one write with the head
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)
_BODYLESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
_POOL_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})
_CLOSED_ERRNOS = (errno.EBADF, errno.ENOTSOCK)  # as trio's SocketStream reads them


class _Stale(Exception):
    """A reused connection died before sending a response byte: retry on a fresh one."""


class _Request:
    __slots__ = ("body", "head", "head_only", "may_keep")

    def __init__(self, head: bytes, body: bytes, head_only: bool, may_keep: bool) -> None:
        self.head = head
        self.body = body
        self.head_only = head_only  # a HEAD request: the response has no body
        self.may_keep = may_keep  # the request did not ask to close the connection


class _Connection:
    __slots__ = ("plain", "reused", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        # The socket itself, read directly (`_read`), when the stream is plain TCP.
        self.plain: socket | None = plain_socket(stream)
        self.reused = False

    def close(self) -> None:
        # Synchronous on purpose, so it is safe in any cleanup path. A TLS connection is
        # dropped without close_notify, which HTTPS permits.
        self.sock.close()

    def is_dead(self) -> bool:
        # An idle connection has nothing to say: readable means EOF, a reset or junk.
        return self.sock.fileno() < 0 or self.sock.is_readable()


class _ResponseParser:
    """httptools' callbacks for one exchange, and what they found so far."""

    __slots__ = (
        "body",
        "complete",
        "error",
        "extra",
        "framed",
        "head_only",
        "head_size",
        "headers",
        "keep_alive",
        "parser",
        "status",
        "unparsed",
    )

    def __init__(self, head_only: bool) -> None:
        # A reference cycle (the parser holds our bound methods): `release` breaks it.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.status = 0  # of the final response, once its head is parsed
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.framed = False  # Content-Length or chunked: an EOF before the end is an error
        self.keep_alive = False
        self.body: list[bytes] = []  # body data parsed and not yet handed out
        self.complete = False  # the final response ended
        self.extra = False  # bytes came after it: the connection must not be reused
        self.error: UpstreamTransportError | None = None  # raised once the data before it went
        self.unparsed = 0  # bytes fed since the last body byte (head, chunk framing, trailers)

    def feed(self, data: bytes | bytearray) -> None:
        parser = self.parser
        if parser is None:
            raise UpstreamReadError("the response was already closed")
        head_ended_before = self.status != 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:
                self.extra = True  # junk after the response: it stands, the socket goes
                return
            cause = exc.__context__  # what a callback raised, if anything
            if isinstance(cause, UpstreamTransportError):
                self.error = cause
            else:
                self.error = UpstreamProtocolError(f"invalid HTTP/1.1 from upstream: {exc}")
                self.error.__cause__ = exc
            return
        except httptools.HttpParserUpgrade as exc:  # a 101 (never asked for)
            self.error = UpstreamProtocolError("unexpected protocol switch from upstream")
            self.error.__cause__ = exc
            return
        if self.body or self.complete or (not head_ended_before and self.status):
            self.unparsed = 0  # progress (the head itself is bounded in `on_headers_complete`)
        else:
            self.unparsed += len(data)
            if self.unparsed > _MAX_HEAD_SIZE:
                self.error = UpstreamProtocolError("upstream response head or framing too big")

    def release(self) -> None:
        self.parser = None

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.status:
            self.extra = True  # a second response: we never pipeline, so it is not ours

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:
            return  # a trailer (after a chunked body): dropped, as h11 did
        self.head_size += len(name) + len(value) + 4
        name = name.lower()
        if name == b"content-length":
            self.framed = True
        elif name == b"transfer-encoding":
            if self.framed or value.strip(b" \t").lower() != b"chunked":
                raise UpstreamProtocolError("unsupported Transfer-Encoding from upstream")
            self.framed = True
        self.headers.append((name, value.rstrip(b" \t")))  # llhttp strips only leading OWS

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("unexpected protocol switch from upstream")
            self.headers = []  # an informational response: the final one follows
            self.head_size = 0
            self.framed = False
            return
        if self.head_size > _MAX_HEAD_SIZE:
            raise UpstreamProtocolError("upstream response head too big")
        self.status = status
        if parser.get_http_version() != "1.1":
            self.keep_alive = False  # HTTP/1.0 even with keep-alive, as h11 did
        elif self.head_only:
            # llhttp's should_keep_alive would also want a length, which HEAD does not need
            self.keep_alive = not any(
                name == b"connection" and b"close" in value.lower() for name, value in self.headers
            )
        else:
            self.keep_alive = parser.should_keep_alive()
        if self.head_only:
            # llhttp cannot be told a response answers HEAD (httptools gives its callback
            # no way to skip the body): the response ends here, and any byte llhttp then
            # takes for a body is `extra`, so the connection is not reused.
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.extra = True
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True


class UpstreamResponse:
    """Status and headers of a response; the body is read off the socket on demand."""

    __slots__ = ("_conn", "_fresh", "_p", "headers", "status")

    def __init__(self, conn: _Connection, parsed: _ResponseParser) -> None:
        self.status: int = parsed.status
        self.headers: list[tuple[bytes, bytes]] = parsed.headers  # names lowercased
        parsed.headers = []  # the parser needs them no more (a trailer is dropped)
        self._conn = conn
        self._p = parsed
        self._fresh = True  # no body read yet since the head's

    def forget_headers(self) -> None:
        """Drop the headers, once read: a stream may be held for minutes, and ~20
        headers are ~3 KiB (ops/bench/idle_memory.py). `headers` is empty from here on."""
        self.headers = []

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
        # The read is awaited here, not through another coroutine: an idle stream is
        # suspended in this frame, and each frame in the chain is kept for as long.
        p = self._p
        while True:
            if p.body:
                return self._with_buffered()
            if p.error is not None:
                raise p.error
            if p.complete:
                raise StopAsyncIteration
            try:
                data: bytes | bytearray | None = None
                if self._fresh:
                    # The first body bytes (an SSE stream's first event) have often come
                    # while the caller answered the head: taken without waiting for the
                    # socket (an epoll_ctl(2) and a turn of the event loop on the path to
                    # the client's first byte). The caller's write is the checkpoint.
                    self._fresh = False
                    data = _recv_ready(self._conn)
                if data is None:
                    sock = self._conn.plain
                    if sock is None or sock.fileno() == -1:
                        data = await _read(self._conn)  # TLS, or closed (`_read` says so)
                    else:
                        # `_read`'s wait and recv(2), inlined: one coroutine fewer per
                        # relayed read, and one frame fewer to resume when it is woken.
                        await trio.lowlevel.wait_readable(sock)
                        try:
                            data = sock.recv(_READ_SIZE)
                        except BlockingIOError:  # woken with nothing to read after all
                            continue
            except OSError as exc:  # as `_read` translates them
                broke = _stream_error(exc)
                message = f"upstream connection broke mid-response: {broke}"
                raise UpstreamReadError(message) from broke
            except _STREAM_ERRORS as exc:
                raise UpstreamReadError(f"upstream connection broke mid-response: {exc}") from exc
            self._received(data)

    def ready_piece(self) -> bytes | None:
        """The next body piece if it is at hand without waiting, else None (then iterate):
        one parsed already, or, before the first body read, what the socket already holds
        (taken now: a recv(2) that finds nothing leaves the first read to try again, after
        the caller's head is written). A caller that has its first piece before answering
        its client can send the head and it in one write. An error or the body's end is
        left for the iteration to report."""
        p = self._p
        if not p.body and self._fresh and p.error is None and not p.complete:
            try:
                data = _recv_ready(self._conn)
            except _STREAM_ERRORS as exc:
                self._fresh = False
                p.error = UpstreamReadError(f"upstream connection broke mid-response: {exc}")
                p.error.__cause__ = exc
                return None
            if data is None:
                return None
            self._fresh = False
            self._received(data)
        return self._with_buffered() if p.body else None

    async def read(self) -> bytes:
        """The rest of the body."""
        return b"".join([chunk async for chunk in self])

    def _with_buffered(self) -> bytes:
        """The body data parsed from the last read, as one piece (no I/O): a read is fed to
        the parser whole, so this is everything it brought, de-chunked."""
        body = self._p.body
        chunk = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        return chunk

    def _received(self, data: bytes | bytearray) -> None:
        p = self._p
        if data:
            p.feed(data)
        elif p.framed:
            p.error = UpstreamReadError("upstream closed the connection mid-response")
        else:  # a body without a length ends at EOF (a no-body response completed already)
            p.complete = True
            p.keep_alive = False

    def read_to_end_buffered(self) -> bool:
        """Whether the body ends within what is already buffered (consumed without I/O).
        Every byte received has been parsed already, so this is whether it ended."""
        return self._p.complete


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
        return _RequestContext(self, self._build_request(method, target, headers, body))

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests fail to connect."""
        self._closed = True
        for conn in (*self._idle, *self._active):
            conn.close()
        self._idle.clear()
        await trio.lowlevel.checkpoint()

    def _build_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> _Request:
        method_b = method.encode("ascii")
        target_b = self._prefix + target.encode("ascii")
        may_keep = True
        for name, value in headers:
            lower = name.lower()
            if lower in _POOL_HEADERS:
                raise ValueError(f"the pool sets {lower.decode('ascii', 'replace')} itself")
            if lower == b"connection" and b"close" in value.lower():
                may_keep = False
        lines = [
            method_b + b" " + target_b + b" HTTP/1.1",
            b"host: " + self._host_header,
            *[name + b": " + value for name, value in headers],
        ]
        if body or method_b not in _BODYLESS_METHODS:
            lines.append(b"content-length: %d" % len(body))
        lines += (b"", b"")
        head = b"\r\n".join(lines)
        # The same bytes h11 wrote, without its regex per header (~25 µs a request): no CR,
        # LF or NUL but our own line ends, and one space in the request line, rule out
        # header injection and request splitting.
        crlfs = len(lines) - 1
        if (
            method_b.count(b" ") + target_b.count(b" ")
            or head.count(b"\r") != crlfs
            or head.count(b"\n") != crlfs
            or b"\x00" in head
        ):
            raise ValueError("request line or header contains a forbidden character")
        return _Request(head, body, method_b == b"HEAD", may_keep)

    async def _open(self, request: _Request) -> tuple[_Connection, UpstreamResponse]:
        conn = self._take_idle()
        if conn is not None:
            try:
                return conn, await self._exchange(conn, request)
            except _Stale:
                pass  # already dropped; go again on a fresh connection, once
        conn = await self._connect()
        return conn, await self._exchange(conn, request)

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

    async def _exchange(self, conn: _Connection, request: _Request) -> UpstreamResponse:
        parsed = _ResponseParser(request.head_only)
        try:
            await self._send(conn, request)
            return await self._read_head(conn, parsed)
        except BaseException:
            parsed.release()
            self._active.discard(conn)
            conn.close()
            raise

    async def _send(self, conn: _Connection, request: _Request) -> None:
        head, body = request.head, request.body
        try:
            if len(body) <= _SEND_TOGETHER:
                data = head + body
                sent = _send_now(conn, data)
                if sent < len(data):
                    await conn.stream.send_all(memoryview(data)[sent:] if sent else data)
            else:
                await conn.stream.send_all(head)
                await conn.stream.send_all(body)
        except _STREAM_ERRORS as exc:
            if conn.reused:
                raise _Stale from exc
            raise UpstreamReadError(f"upstream connection broke while sending: {exc}") from exc

    async def _read_head(self, conn: _Connection, parsed: _ResponseParser) -> UpstreamResponse:
        received = False
        while True:
            try:
                data = await _read(conn)
            except _STREAM_ERRORS as exc:
                if conn.reused and not received:
                    raise _Stale from exc
                raise UpstreamReadError(f"upstream connection broke: {exc}") from exc
            if not data:
                if conn.reused and not received:
                    raise _Stale
                raise UpstreamReadError("upstream closed the connection before responding")
            received = True
            parsed.feed(data)
            if parsed.status:
                return UpstreamResponse(conn, parsed)  # an error after the head waits its turn
            if parsed.error is not None:
                raise parsed.error

    def _finish(self, conn: _Connection, response: UpstreamResponse, may_keep: bool) -> None:
        self._active.discard(conn)
        parsed = response._p
        if (
            not self._closed
            and len(self._idle) < self._max_idle
            and response.read_to_end_buffered()
            and parsed.keep_alive
            and may_keep
            and not parsed.extra
        ):
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()
        parsed.release()


def _send_now(conn: _Connection, data: bytes) -> int:
    """One non-blocking send(2) of `data` over plain TCP, without trio's checkpoints: the
    bytes the kernel took (0 over TLS, or when its buffer is full); `send_all`'s errors.

    A request (head and body, up to `_SEND_TOGETHER`) nearly always goes whole in this one
    call. `send_all` would then yield a turn of the event loop before the head's read even
    starts (the read's own wait is the exchange's checkpoint), on the path to the first
    byte of every answer."""
    sock = conn.plain
    if sock is None:
        return 0
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError as exc:  # as trio's SocketStream translates them
        if exc.errno in _CLOSED_ERRNOS:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """An OSError of a plain socket as trio's SocketStream raises it (chained as raised)."""
    if exc.errno in _CLOSED_ERRNOS:
        closed = trio.ClosedResourceError("this socket was already closed")
        closed.__suppress_context__ = True
        return closed
    broken = trio.BrokenResourceError(f"socket connection broken: {exc}")
    broken.__cause__ = exc
    return broken


def _recv_ready(conn: _Connection) -> bytes | None:
    """What one recv(2) finds already received over plain TCP (b"" at EOF), without
    waiting; None when nothing is there yet (or over TLS). `receive_some`'s errors."""
    sock = conn.plain
    if sock is None:
        return None
    try:
        return sock.recv(_READ_SIZE)
    except BlockingIOError:
        return None
    except OSError as exc:  # as trio's SocketStream translates them
        if exc.errno in _CLOSED_ERRNOS:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def _read(conn: _Connection) -> bytes | bytearray:
    """One read of up to `_READ_SIZE` bytes (b"" at EOF), with `receive_some`'s errors;
    a checkpoint, as `receive_some` is.

    Over plain TCP: wait until the socket is readable, then one recv(2) (see the module
    doc). Even a response head is waited for first: it is read right after the request
    was written, before the upstream (another process) can have answered, so trying the
    recv(2) first, as trio does, would only fail (a system call, and the GIL let go, for
    nothing)."""
    sock = conn.plain
    if sock is None:
        return await conn.stream.receive_some(_READ_SIZE)
    if sock.fileno() == -1:  # closed: no fd to wait on
        raise trio.ClosedResourceError("this socket was already closed")
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(_READ_SIZE)
            except BlockingIOError:  # woken with nothing to read after all
                pass
    except OSError as exc:  # as trio's SocketStream translates them
        if exc.errno in _CLOSED_ERRNOS:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


class _RequestContext:
    """What `UpstreamPool.request` returns: holds a slot and a connection while open."""

    __slots__ = ("_conn", "_may_keep", "_pool", "_request", "_response")

    def __init__(self, pool: UpstreamPool, request: _Request) -> None:
        self._pool = pool
        self._request: _Request | None = request
        self._may_keep = request.may_keep

    async def __aenter__(self) -> UpstreamResponse:
        pool = self._pool
        # A free slot is taken without the turn of the event loop `acquire` yields when it
        # need not wait: the exchange's checkpoint is the wait for the response head
        # (`_read_head`), which follows at once; a cancelled caller is stopped here.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            pool._slots.acquire_nowait()
        except trio.WouldBlock:
            await pool._slots.acquire()
        try:
            if pool._closed:
                raise UpstreamConnectError("the upstream pool is closed")
            request = self._request
            assert request is not None, "a request context is entered once"
            self._conn, self._response = await pool._open(request)
        except BaseException:
            pool._slots.release()
            raise
        # Its head (with the account's token) and body are sent: a stream held for minutes
        # keeps neither.
        self._request = None
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self._pool
        pool._finish(self._conn, self._response, self._may_keep)
        pool._slots.release()
