"""A deadline on the server's socket writes: a client that stops reading is let go (DESIGN §8).

Hypercorn's trio worker (0.18) writes each chunk of a response inside a shielded cancel
scope with no deadline. A client that opens a stream (SSE, a websocket) and then stops
reading without closing fills its TCP window, and the write then waits for as long as the
client keeps the connection open: no timeout of the application can reach it, so the
request keeps its account's lease, its admission slot and its upstream socket.

`stall_bounded_writes` replaces `TCPServer.protocol_send` with one that writes under a
shielded scope with a deadline (a shielded scope still honours its own deadline), moved on
each time bytes go: a write that makes no progress for `WriteStall.seconds` ends the
connection. The stream is closed (its state after a cancelled send is undefined) and the
protocol is told `Closed()`, as when the peer resets: the application's `http.disconnect`
or `websocket.disconnect` arrives, its later sends are dropped, and the relays let go of
what they hold through their usual client-gone path. A slow reader is not cut as long as
it keeps taking bytes.

The deadline is per server: `hypercorn_config` puts a `WriteStall` on the Hypercorn config
it builds, and the gateway updates its own from the instance setting
`write_stall_timeout_seconds` whenever its settings load; other servers (the emulator)
keep `DEFAULT_WRITE_STALL_S`.

This reaches into Hypercorn's `TCPServer` (its `stream`, `send_lock`, `protocol` and
`config`), as of 0.18, and writes to a `trio.SocketStream`'s socket as its `send_all` does
(trio 0.35): `stall_bounded_writes` refuses to start if one has moved, and
tests/hostile/test_write_stall.py checks the behaviour.
"""

from __future__ import annotations

import errno
import inspect
from dataclasses import dataclass
from typing import Any

import trio

DEFAULT_WRITE_STALL_S = 60.0
# Over a TCP socket any byte sent is progress. Over another stream (TLS, which the gateway
# leaves to its proxy), each piece of this many bytes must go within the deadline: a reader
# taking 4 KiB a minute is slow but reading, and Linux wakes a blocked writer only once
# about a third of its send buffer (16 KiB at first) is free again anyway.
PIECE = 4 * 1024
_CLOSED_ERRNOS = (errno.EBADF, errno.ENOTSOCK)  # as trio's SocketStream reads them


@dataclass(slots=True)
class WriteStall:
    """How long a write to a client may make no progress; shared with whoever tunes it."""

    seconds: float = DEFAULT_WRITE_STALL_S


_DEFAULT = WriteStall()


async def send_within(stream: Any, data: bytes, stall_s: float) -> bool:
    """Send `data` on `stream` (a trio stream) whatever the caller's cancellation, as long
    as it makes progress within `stall_s` seconds; False when it did not (the stream is
    then in an undefined state and must be closed)."""
    if type(stream) is not trio.SocketStream or not data:
        return await _send_in_pieces(stream, data, stall_s)
    with trio.CancelScope(deadline=trio.current_time() + stall_s, shield=True) as scope:
        await _send_moving_deadline(stream.socket, data, scope, stall_s)
    return not scope.cancelled_caught


async def _send_moving_deadline(
    sock: trio.socket.SocketType, data: bytes, scope: trio.CancelScope, stall_s: float
) -> None:
    """`SocketStream.send_all`'s loop (the same system calls), the deadline moved on each
    time bytes go; its errors as the stream's."""
    if sock.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    try:
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                with view[sent:] as rest:
                    sent += await sock.send(rest)
                scope.deadline = trio.current_time() + stall_s
    except OSError as exc:
        if exc.errno in _CLOSED_ERRNOS:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def _send_in_pieces(stream: Any, data: bytes, stall_s: float) -> bool:
    view = memoryview(data) if len(data) > PIECE else None
    for start in range(0, len(data) or 1, PIECE):
        piece = data if view is None else view[start : start + PIECE]
        with trio.CancelScope(deadline=trio.current_time() + stall_s, shield=True) as scope:
            await stream.send_all(piece)
        if scope.cancelled_caught:
            return False
    return True


def stall_bounded_writes() -> None:
    """Make Hypercorn's trio worker write under a stall deadline (see the module doc).
    Idempotent."""
    from hypercorn.events import Closed, RawData
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    send = server.protocol_send
    if getattr(send, "_stall_bounded", False):
        return
    # The replacement assumes the original's shape: fail rather than serve without it.
    source = inspect.getsource(send)
    expected = ("self.send_lock", "self.stream.send_all", "shield = True", "Closed()")
    missing = [text for text in expected if text not in source]
    init = inspect.getsource(server.__init__)
    missing += [name for name in ("self.stream", "self.send_lock") if name not in init]
    if not hasattr(trio.socket.SocketType, "did_shutdown_SHUT_WR"):
        missing.append("trio.socket.SocketType.did_shutdown_SHUT_WR")
    if missing:
        raise RuntimeError(f"Hypercorn or trio changed: {missing} not found (pooler.write_stall)")

    async def protocol_send(self: tcp_server.TCPServer, event: Any) -> None:
        if not isinstance(event, RawData):
            await send(self, event)
            return
        stall = getattr(self.config, "write_stall", _DEFAULT)
        async with self.send_lock:
            try:
                if await send_within(self.stream, event.data, stall.seconds):
                    return
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await self.protocol.handle(Closed())

    protocol_send._stall_bounded = True  # type: ignore[attr-defined]
    server.protocol_send = protocol_send  # type: ignore[method-assign]
