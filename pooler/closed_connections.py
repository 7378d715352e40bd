"""A connection whose client has gone ends at once, not at the keep-alive deadline.

Hypercorn 0.18's trio worker serves each connection in a task group with a keep-alive
timer task (`TCPServer.idle_task`), restarted each time a response completes and stopped
when the next request arrives. When the client closes a connection that is idle between
requests (the timer running), the read loop ends but nothing stops the timer, so the
connection's task group, and its protocol and buffers, wait for the timer to
expire: `keep_alive_timeout`, 75 s here. The same happens when a response completes just
after the read loop ended (the timer is restarted on a closed connection). A client that
opens a connection per request and closes it after each answer (httpx clients made per
call, scripts, health checkers) leaves every one of them behind for 75 s.

`end_idle_timer_with_reading` wraps `TCPServer._read_data`: once it returns (end of file,
a reset, a closed stream), the timer is stopped and replaced by one that cannot start
again. Nothing is lost: the timer exists to close a connection that is already closed.
It checks first that Hypercorn still has the shape this relies on;
tests/unit/test_closed_connections.py drives Hypercorn's own server.

A connection whose client pipelined a request behind an answer that never completes (the
client left mid-answer) is the server protocol's to end: pooler.http_server.protocol.
"""

from __future__ import annotations

import inspect
from typing import Any

from pooler.dependency_shape import missing_texts, refuse_if_moved


class StoppedTimer:
    """An idle timer of a connection that can no longer be read: never starts again."""

    __slots__ = ()

    async def restart(self, task_group: Any, action: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


_STOPPED = StoppedTimer()


def end_idle_timer_with_reading() -> None:
    """Install the idle timer's wrapper (see the module doc). Idempotent."""
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
