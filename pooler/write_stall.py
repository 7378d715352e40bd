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

A write costs no deadline while the socket takes it: the bytes go in one non-blocking
send(2) first, and only what the kernel's buffer cannot take yet is written under the
shielded scope and its deadline (a write that never waits cannot stall). When nobody else
holds the send lock (one writer per connection, the usual case), that first send needs no
lock (nothing else runs until it returns) and the send yields once afterwards, where
Hypercorn took two scheduler turns (the lock's and trio's `send`'s): a send is still a
checkpoint, a cancelled caller is still stopped before its first byte, and the lock is
taken, without a turn, only when the rest must wait. A writer whose next step is a wait of
its own (the server protocol's `PieceWriter`, for a relay, and a streamed head marked
`WAIT_FOLLOWS`) writes through `unyielding_send`, the same write without that yield.

This reaches into Hypercorn's `TCPServer` (its `stream`, `send_lock`, `protocol` and
`config`), as of 0.18, and writes to a `trio.SocketStream`'s socket as its `send_all` does
(trio 0.35), its first attempt straight to the socket trio wraps (`pooler.trio_socket`), as
trio's own `send` does: `stall_bounded_writes` refuses to start if one has moved, and
tests/hostile/test_write_stall.py and tests/unit/test_write_deadline.py check the
behaviour.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.trio_socket import os_socket

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


async def send_within(stream: Any, data: bytes | memoryview, stall_s: float) -> bool:
    """Send `data` on `stream` (a trio stream) whatever the caller's cancellation, as long
    as it makes progress within `stall_s` seconds; False when it did not (the stream is
    then in an undefined state and must be closed). Not a checkpoint when the socket took
    everything at once (the caller's is)."""
    if type(stream) is not trio.SocketStream:
        return await _send_in_pieces(stream, data, stall_s)
    sock = stream.socket
    sent = send_now(sock, data)
    if sent == len(data):
        return True
    # The socket's buffer is full: wait for it, under the deadline.
    with trio.CancelScope(deadline=trio.current_time() + stall_s, shield=True) as scope:
        await _send_moving_deadline(sock, memoryview(data)[sent:], scope, stall_s)
    return not scope.cancelled_caught


def send_now(sock: trio.socket.SocketType, data: bytes | memoryview) -> int:
    """One non-blocking send(2) of `data`, as trio's `send` first tries it (without its
    checkpoints): the bytes the kernel took, 0 when its buffer is full; errors as
    `SocketStream.send_all` raises them."""
    if sock.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    if not data:  # no system call (the end of a fixed-length body), but a closed socket says so
        if sock.fileno() == -1:
            raise trio.ClosedResourceError("socket was already closed")
        return 0
    try:
        return os_socket(sock).send(data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _stream_error(exc) from (None if exc.errno in _CLOSED_ERRNOS else exc)


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def _send_moving_deadline(
    sock: trio.socket.SocketType, data: memoryview, scope: trio.CancelScope, stall_s: float
) -> None:
    """`SocketStream.send_all`'s loop (the same system calls), the deadline moved on each
    time bytes go; its errors as the stream's."""
    if sock.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    try:
        with data as view:
            sent = 0
            while sent < len(view):
                with view[sent:] as rest:
                    sent += await sock.send(rest)
                scope.deadline = trio.current_time() + stall_s
    except OSError as exc:
        raise _stream_error(exc) from (None if exc.errno in _CLOSED_ERRNOS else exc)


async def _send_in_pieces(stream: Any, data: bytes | memoryview, stall_s: float) -> bool:
    view = memoryview(data) if len(data) > PIECE else None
    for start in range(0, len(data) or 1, PIECE):
        piece = data if view is None else view[start : start + PIECE]
        with trio.CancelScope(deadline=trio.current_time() + stall_s, shield=True) as scope:
            await stream.send_all(piece)
        if scope.cancelled_caught:
            return False
    return True


async def _write(server: Any, data: bytes | memoryview) -> None:
    """Write `data` to a Hypercorn `TCPServer`'s stream under its stall deadline, its send
    lock held; on a stall or a broken stream, close it and tell the protocol `Closed()`."""
    stall = getattr(server.config, "write_stall", _DEFAULT)
    try:
        if await send_within(server.stream, data, stall.seconds):
            return
        with trio.CancelScope(shield=True):
            await server.stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await _closed(server)


async def _closed(server: Any) -> None:
    """Tell a `TCPServer`'s protocol its stream is gone, as Hypercorn does after a failed
    write."""
    from hypercorn.events import Closed

    await server.protocol.handle(Closed())


async def _send_raw(server: Any, data: bytes) -> bool:
    """Write `data` to a Hypercorn `TCPServer`, as its patched `protocol_send` does a
    `RawData`, but without the yield to the loop it makes after a write that did not go
    through the lock: True when it owes that yield (a send stays a checkpoint), which
    `protocol_send` then makes and an unyielding writer skips (`unyielding_send`).

    Nobody is writing (one writer per connection, the usual case): one non-blocking
    send(2), without the scheduler turns of `async with lock` and trio's `send`. Nothing
    runs between the check and the send, so no other write can come between; the lock is
    taken only if the rest must wait. A cancelled caller is stopped before any byte goes."""
    lock, stream = server.send_lock, server.stream
    if lock.locked() or type(stream) is not trio.SocketStream:
        async with lock:
            await _write(server, data)
        return False
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        sent = send_now(stream.socket, data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        sent = -1
    if sent == len(data):
        return True
    lock.acquire_nowait()
    try:
        if sent < 0:
            await _closed(server)
        else:
            await _write(server, memoryview(data)[sent:])
    finally:
        lock.release()
    return True


def unyielding_send(send: Any) -> Callable[[bytes], Awaitable[bool]] | None:
    """For a server protocol whose `send` is Hypercorn's `TCPServer.protocol_send` made
    stall-bounded here: its write of raw bytes without the yield after it (when the socket
    takes them at once, none at all; a cancellation is still checked first), for a writer
    whose next step is a wait of its own anyway (pooler.http_server.protocol: a relayed body piece,
    or a streamed head, then the wait for the upstream's next read). Else None (another
    server, a test's)."""
    if getattr(getattr(send, "__func__", None), "_stall_bounded", False):
        return partial(_send_raw, send.__self__)
    return None


def stall_bounded_writes() -> None:
    """Make Hypercorn's trio worker write under a stall deadline (see the module doc).
    Idempotent."""
    from hypercorn.events import RawData
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    send = server.protocol_send
    if getattr(send, "_stall_bounded", False):
        return
    # The replacement assumes the original's shape: fail rather than serve without it.
    missing = missing_texts(
        {
            send: ("self.send_lock", "self.stream.send_all", "shield = True", "Closed()"),
            server.__init__: ("self.stream", "self.send_lock"),
        }
    )
    if not hasattr(trio.socket.SocketType, "did_shutdown_SHUT_WR"):
        missing.append("trio.socket.SocketType.did_shutdown_SHUT_WR")
    missing += [name for name in ("locked", "acquire_nowait") if not hasattr(trio.Lock, name)]
    refuse_if_moved(missing, "Hypercorn or trio", "pooler.write_stall")

    async def protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData):
            await send(self, event)
            return
        if await _send_raw(self, event.data):
            # A send stays a checkpoint: the yield `_send_raw` did not make.
            await trio.lowlevel.cancel_shielded_checkpoint()

    protocol_send._stall_bounded = True  # type: ignore[attr-defined]
    protocol_send.__wrapped__ = send  # type: ignore[attr-defined]
    server.protocol_send = protocol_send  # type: ignore[method-assign]
