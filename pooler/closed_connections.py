"""A connection whose client has gone ends at once, not at the keep-alive deadline.

Hypercorn 0.18's trio worker serves each connection in a task group with a keep-alive
timer task (`TCPServer.idle_task`), restarted each time a response completes and stopped
when the next request arrives. When the client closes a connection that is idle between
requests (the timer running), the read loop ends but nothing stops the timer, so the
connection's task group, and its protocol, h11 state and buffers, wait for the timer to
expire: `keep_alive_timeout`, 75 s here. The same happens when a response completes just
after the read loop ended (the timer is restarted on a closed connection). A client that
opens a connection per request and closes it after each answer (httpx clients made per
call, scripts, health checkers) leaves every one of them behind for 75 s.

`end_idle_timer_with_reading` wraps `TCPServer._read_data`: once it returns (end of file,
a reset, a closed stream), the timer is stopped and replaced by one that cannot start
again. Nothing is lost: the timer exists to close a connection that is already closed.
It checks first that Hypercorn still has the shape this relies on;
tests/unit/test_closed_connections.py drives Hypercorn's own server.

A connection whose client pipelined a request behind one whose answer never completes
(the client left mid-answer, its write failed) used to stay for ever: H11Protocol's read
loop waits (`h11.PAUSED`, on `can_read`) for the current answer to end before it reads
the next request, and nothing sets `can_read` when the connection is `Closed` instead, so
the loop never reads the end of file and the task, its socket and protocol stay. Each such
client (pipeline two requests, leave during the first answer) kept a file descriptor and
~45 objects until the process stopped (tests/integration/test_hostile_memory.py).
`unpark_reading_on_close` wraps `H11Protocol.handle`: on `Closed` with a pipelined request
waiting, the protocol gets a spent h11 connection (it reports the connection closed), the
socket is closed and the read loop woken, so it ends.
"""

from __future__ import annotations

import inspect
from typing import Any

from pooler.dependency_shape import missing_texts, refuse_if_moved


def _spent_connection() -> Any:
    """An h11 server connection that has seen the end of its input: `next_event` says
    `ConnectionClosed`."""
    import h11

    spent = h11.Connection(h11.SERVER)
    spent.receive_data(b"")
    return spent


class StoppedTimer:
    """An idle timer of a connection that can no longer be read: never starts again."""

    __slots__ = ()

    async def restart(self, task_group: Any, action: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


_STOPPED = StoppedTimer()


def end_idle_timer_with_reading() -> None:
    """Install the wrappers (see the module doc): the idle timer's and
    `unpark_reading_on_close`. Idempotent."""
    unpark_reading_on_close()
    import trio
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    read_data = server._read_data
    if getattr(read_data, "_ends_idle_timer", False):
        return
    expected = {
        server.__init__: ("self.idle_task = TrioSingleTask()",),
        inspect.unwrap(server.protocol_send): ("self.idle_task.restart", "self.idle_task.stop()"),
        inspect.unwrap(server.run): ("await self._read_data()", "async with TaskGroup()"),
    }
    refuse_if_moved(missing_texts(expected), "Hypercorn", "pooler.closed_connections")

    async def read_data_then_stop_timer(self: Any) -> None:
        try:
            await read_data(self)
        finally:
            timer, self.idle_task = self.idle_task, _STOPPED
            with trio.CancelScope(shield=True):
                await timer.stop()

    read_data_then_stop_timer._ends_idle_timer = True  # type: ignore[attr-defined]
    read_data_then_stop_timer.__wrapped__ = read_data  # type: ignore[attr-defined]
    server._read_data = read_data_then_stop_timer  # type: ignore[method-assign]


def unpark_reading_on_close() -> None:
    """End a read loop parked behind a pipelined request when its connection is `Closed`
    (see the module doc). Idempotent."""
    import h11
    import trio
    from hypercorn.events import Closed
    from hypercorn.protocol.h11 import H11Protocol

    handle = H11Protocol.handle
    if getattr(handle, "_unparks_reading", False):
        return
    expected = {
        inspect.unwrap(handle): ("isinstance(event, Closed)", "await self._close_stream()"),
        inspect.unwrap(H11Protocol._handle_events): (
            "event = self.connection.next_event()",
            "elif event is h11.PAUSED:",
            "await self.can_read.clear()",
            "await self.can_read.wait()",
            "isinstance(event, h11.ConnectionClosed)",
        ),
    }
    missing = missing_texts(expected)
    if not isinstance(_spent_connection().next_event(), h11.ConnectionClosed):
        missing.append("h11: a connection that has seen EOF reports ConnectionClosed")
    refuse_if_moved(missing, "Hypercorn", "pooler.closed_connections")
    done = h11.DONE

    async def handle_then_unpark(self: Any, event: Any) -> None:
        await handle(self, event)
        if type(event) is Closed:
            connection = self.connection
            # Their request is complete and more bytes wait behind it: the read loop is
            # parked (PAUSED) until an answer that will never complete does.
            if connection.their_state is done and connection.trailing_data[0]:
                self.connection = _spent_connection()
                # Often run by the application's task (its write failed), which the
                # client's leaving has just cancelled (pooler.client_gone).
                with trio.CancelScope(shield=True):
                    await self.can_read.set()
                    await self.send(Closed())  # the server closes the socket

    handle_then_unpark._unparks_reading = True  # type: ignore[attr-defined]
    handle_then_unpark.__wrapped__ = handle  # type: ignore[attr-defined]
    H11Protocol.handle = handle_then_unpark  # type: ignore[method-assign]
