"""The server's read of each client connection: lean over plain TCP, and a connection whose
client has gone ends at once, not at the keep-alive deadline.

`end_idle_timer_with_reading` replaces Hypercorn 0.18's `TCPServer._read_data` (the loop
that reads the client's socket and hands each piece to the protocol) with
`read_client`, which does two things besides what it did:

- Over plain TCP with no `read_timeout` (the gateway's and the emulator's config) each read
  waits for the socket with `trio.lowlevel.wait_readable`, then makes one recv(2) on the
  socket trio wraps, as `pooler.upstream.http1._read` does for the upstream. Hypercorn's
  loop opens `trio.fail_after(read_timeout or inf)` (a cancel scope with no limit) around
  `SocketStream.receive_some` per read, which first tries a recv(2) that fails with EAGAIN
  when the client is waiting for its answer (every keep-alive request but the first), and
  keeps that scope and three coroutines suspended for as long as a held SSE stream or
  websocket session idles. Errors are read as `receive_some` translates them: a closed
  socket, a reset, end of file all end the loop. Over TLS (`trio.SSLStream`) the stream's
  `receive_some` is used, still without the per-read scope; with a `read_timeout`,
  Hypercorn's own loop runs unchanged.
- Hypercorn serves each connection in a task group with a keep-alive timer task
  (`TCPServer.idle_task`), restarted each time a response completes and stopped when the
  next request arrives. When the client closes a connection that is idle between requests
  (the timer running), the read loop ends but nothing stops the timer, so the connection's
  task group, and its protocol and buffers, wait for the timer to expire:
  `keep_alive_timeout`, 75 s here. The same happens when a response completes just after
  the read loop ended (the timer is restarted on a closed connection). A client that opens
  a connection per request and closes it after each answer (httpx clients made per call,
  scripts, health checkers) would leave every one of them behind for 75 s. So once the
  loop ends (end of file, a reset, a closed stream), the timer is ended
  (pooler.idle_timer.end) and replaced by one that cannot start again. Nothing is lost:
  the timer exists to close a connection that is already closed.

It checks first that Hypercorn and trio still have the shape this relies on (the refused
start is tested); tests/unit/test_closed_connections.py drives Hypercorn's own server.

A connection whose client pipelined a request behind an answer that never completes (the
client left mid-answer) is the server protocol's to end: pooler.http_server.protocol.
"""

from __future__ import annotations

import inspect
from typing import Any

import trio

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.idle_timer import end as end_timer
from pooler.idle_timer import start_idle_timers_soon
from pooler.trio_socket import os_socket

MAX_RECV = 2**16  # Hypercorn's read size
_STREAM_ENDS = (trio.ClosedResourceError, trio.BrokenResourceError)
_SOCKET_ENDS = (OSError, *_STREAM_ENDS)  # what receive_some translates OSError to, and those


class StoppedTimer:
    """An idle timer of a connection that can no longer be read: never starts again."""

    __slots__ = ()

    async def restart(self, task_group: Any, action: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


_STOPPED = StoppedTimer()


def end_idle_timer_with_reading() -> None:
    """Install `read_client` as `TCPServer._read_data` (see the module doc). Idempotent."""
    from hypercorn.events import Closed, RawData
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    hypercorn_read = server._read_data
    if getattr(hypercorn_read, "_ends_idle_timer", False):
        return
    start_idle_timers_soon()  # the timer `end_timer` ends
    expected = {
        server.__init__: ("self.idle_task = TrioSingleTask()", "self.stream = stream"),
        inspect.unwrap(server.protocol_send): ("self.idle_task.restart", "self.idle_task.stop()"),
        inspect.unwrap(server.run): ("await self._read_data()", "async with TaskGroup()"),
        hypercorn_read: (
            "with trio.fail_after(self.config.read_timeout or inf):",
            "data = await self.stream.receive_some(MAX_RECV)",
            "await self.protocol.handle(RawData(bytes(data)))",
            'if data == b"":',
            "await self.protocol.handle(Closed())",
        ),
    }
    missing = missing_texts(expected)
    if tcp_server.MAX_RECV != MAX_RECV:
        missing.append(f"MAX_RECV = {MAX_RECV}")
    refuse_if_moved(missing, "Hypercorn", "pooler.closed_connections")
    wait_readable = trio.lowlevel.wait_readable

    async def read_client(self: Any) -> None:
        stream = self.stream
        handle = self.protocol.handle
        try:
            if self.config.read_timeout is not None:
                await hypercorn_read(self)  # its per-read deadline, and its Closed
                return
            if type(stream) is trio.SocketStream:
                # The loop a held stream's connection idles in: this frame waiting in
                # wait_readable, nothing else (see the module doc).
                sock = os_socket(stream.socket)
                while True:
                    try:
                        if sock.fileno() == -1:  # closed: no fd to wait on
                            break
                        await wait_readable(sock)
                        data = sock.recv(MAX_RECV)
                    except BlockingIOError:  # woken with nothing to read after all
                        continue
                    except _SOCKET_ENDS:  # each ends the read, as Hypercorn's loop ends it
                        break
                    await handle(RawData(data))
                    if not data:
                        break
            else:
                while True:
                    try:
                        data = await stream.receive_some(MAX_RECV)
                    except _STREAM_ENDS:
                        break
                    await handle(RawData(bytes(data)))
                    if not data:
                        break
            await handle(Closed())
        finally:
            timer, self.idle_task = self.idle_task, _STOPPED
            end_timer(timer)

    read_client._ends_idle_timer = True  # type: ignore[attr-defined]
    read_client.__wrapped__ = hypercorn_read  # type: ignore[attr-defined]
    server._read_data = read_client  # type: ignore[method-assign]
