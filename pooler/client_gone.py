"""Telling a request's handler, synchronously, that its client has left (DESIGN §2, §9).

A relay must stop its upstream work when the client goes away before the answer is
complete. ASGI says so with an `http.disconnect` message on `receive`, which only a task
waiting on `receive` sees: a watcher task per relayed request cost a nursery, a task and
three task switches (~40 µs of CPU) and ~3.5 KiB for as long as a stream is held.

Hypercorn (0.18) learns that a client left in one place: its `HTTPStream` is handed a
`StreamClosed` event. The server's HTTP/1.1 protocol (pooler.http_server, as Hypercorn's
H11Protocol did) sends it when the connection ends (the client's FIN or
reset reaches the read loop as `Closed`; a failed or stalled write, pooler.write_stall,
tells the protocol `Closed()` too), H2Protocol when a stream is reset or the connection
ends. The same event also ends every stream whose answer is complete (the protocol closes
the stream after the response's last byte), and a keep-alive client's next request
creates a new stream: neither is a client leaving.

`report_client_gone` wraps `HTTPStream.handle` so that each request's scope carries a
`ClientGone` (`scope["extensions"][EXTENSION]`) and a `StreamClosed` that arrives before
the response is complete marks it gone and calls the callback the application registered
(`on_leave`), in the task that learnt it, before that task runs anything else. Everything
Hypercorn did still happens first: the application's `http.disconnect` is queued as
before (`wait_for_disconnect` keeps working), so the callback runs once Hypercorn is done
with the event (running it earlier could cancel the application's own task inside
Hypercorn's bookkeeping, when the application's write is what failed).

A callback must be quick and must not raise (it runs inside the server); cancelling a
`trio.CancelScope` is the intended use. A server without this hook gives no extension:
`client_gone(scope)` is then None, and the gateway's relay refuses the request with a 500
(`server_misconfigured`) rather than relay a stream it could not stop when its client
leaves (pooler.web.responses_relay).

`report_client_gone` relies on `HTTPStream.handle` building the scope with an
`extensions` dict and starting the application without a checkpoint (the scope is complete
before the application's task first runs), on its `closed` and `state` attributes and
`ASGIHTTPState.CLOSED` (set before the last `StreamClosed` of a complete response), as of
Hypercorn 0.18: it refuses to start if one has moved. tests/unit/test_client_gone.py drives
the server's own HTTP/1.1 protocol and Hypercorn's stream.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pooler.dependency_shape import refuse_if_moved

EXTENSION = "pooler.client_gone"
_ON_STREAM = "_pooler_client_gone"  # the stream's own reference (no dict lookup on close)

log = logging.getLogger("pooler.client_gone")


class ClientGone:
    """Whether one request's client has left before its answer was complete, and what to
    call when it does."""

    __slots__ = ("_on_leave", "gone")

    def __init__(self) -> None:
        self.gone = False
        self._on_leave: Callable[[], None] | None = None

    def on_leave(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` once when the client leaves (at once if it has already left);
        None forgets the one registered."""
        self._on_leave = callback
        if callback is not None and self.gone:
            self._fire()

    def leave(self) -> None:
        """The server's side: the client is gone."""
        if not self.gone:
            self.gone = True
            self._fire()

    def _fire(self) -> None:
        callback, self._on_leave = self._on_leave, None
        if callback is not None:
            try:
                callback()
            except Exception:  # the server's task must go on closing the stream
                log.exception("a client-gone callback failed")


def client_gone(scope: Mapping[str, Any]) -> ClientGone | None:
    """The request's `ClientGone`, or None when the server gives none."""
    extensions = scope.get("extensions")
    return extensions.get(EXTENSION) if extensions else None


def _check_shapes() -> None:
    from hypercorn.protocol import http_stream

    handle = inspect.getsource(http_stream.HTTPStream.handle)
    expected = {
        "HTTPStream.handle": (
            handle,
            (
                '"extensions": {}',
                "self.app_put = await self.task_group.spawn_app(",
                "isinstance(event, StreamClosed)",
                "self.closed = True",
                '{"type": "http.disconnect"}',
            ),
        ),
        "HTTPStream._send_closed": (
            inspect.getsource(http_stream.HTTPStream._send_closed),
            ("self.state = ASGIHTTPState.CLOSED", "self.send(StreamClosed("),
        ),
        "TaskGroup.spawn_app": (
            inspect.getsource(_spawn_app()),
            ("self._nursery.start_soon(",),
        ),
    }
    missing = [
        f"{where}: {text}"
        for where, (source, texts) in expected.items()
        for text in texts
        if text not in source
    ]
    if not hasattr(http_stream.ASGIHTTPState, "CLOSED"):
        missing.append("ASGIHTTPState.CLOSED")
    # The spawn must not yield: the application's task must not start before the scope
    # carries the extension.
    if "await" in inspect.getsource(_spawn_app()):
        missing.append("TaskGroup.spawn_app without a checkpoint")
    refuse_if_moved(missing, "Hypercorn", "pooler.client_gone")


def _spawn_app() -> Any:
    from hypercorn.trio.task_group import TaskGroup

    return TaskGroup.spawn_app


def report_client_gone() -> None:
    """Give each HTTP request's scope a `ClientGone` that Hypercorn's stream fires (see the
    module doc). Idempotent."""
    from hypercorn.protocol.events import Request, StreamClosed
    from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

    handle = HTTPStream.handle
    if getattr(handle, "_reports_client_gone", False):
        return
    _check_shapes()
    complete = ASGIHTTPState.CLOSED

    async def handle_reporting(self: HTTPStream, event: Any) -> None:
        kind = type(event)
        if kind is StreamClosed:
            gone: ClientGone | None = getattr(self, _ON_STREAM, None)
            if gone is None or self.closed or self.state is complete:
                return await handle(self, event)  # its answer is complete: nobody left
            try:
                await handle(self, event)
            finally:
                gone.leave()
            return
        await handle(self, event)
        if kind is Request and not self.closed:
            # No checkpoint since the application's task was started: it has not run yet.
            gone = ClientGone()
            setattr(self, _ON_STREAM, gone)
            self.scope["extensions"][EXTENSION] = gone  # type: ignore[assignment]

    handle_reporting._reports_client_gone = True  # type: ignore[attr-defined]
    handle_reporting.__wrapped__ = handle  # type: ignore[attr-defined]
    HTTPStream.handle = handle_reporting  # type: ignore[method-assign]
