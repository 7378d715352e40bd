"""pooler.client_gone: the server's HTTP/1.1 protocol (pooler.http_server) and Hypercorn's
stream (as the gateway patches it) tell a request's application, synchronously, that its
client left before the answer was complete; a complete answer, a keep-alive client's next
request and a pipelined one are not a client leaving; `http.disconnect` still arrives on
`receive`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from http1_support import server_protocol
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.task_group import TaskGroup

from pooler.client_gone import EXTENSION, ClientGone, client_gone, report_client_gone
from pooler.http_server import Http1Protocol
from pooler.serving import hypercorn_config

REQUEST = b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n"
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Connection:
    """One server connection: the server's HTTP/1.1 protocol (pooler.http_server), its
    writes recorded; `fail_writes` makes a write fail as pooler.write_stall reports one
    (the protocol is told `Closed()` from inside the application's send)."""

    def __init__(self, app: App, task_group: TaskGroup) -> None:
        self.writes: list[bytes] = []
        self.fail_writes = False
        self.closed = False
        # installs the patches, as in production
        served = hypercorn_config("127.0.0.1", 0)
        self.protocol = server_protocol(Http1Protocol, app, served, task_group, self.send)

    async def send(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self.fail_writes:
                await self.protocol.handle(Closed())
            else:
                self.writes.append(event.data)
        elif isinstance(event, Closed):
            self.closed = True

    async def receive(self, data: bytes) -> None:
        await self.protocol.handle(RawData(data))


class Leaving:
    """An application that starts a streamed answer and waits, its wait cancelled when
    its client leaves (as the relays do); what it saw."""

    def __init__(self, *, start: bool = True) -> None:
        self.start = start
        self.gone: list[ClientGone | None] = []
        self.cancelled = 0
        self.received: list[str] = []
        self.running = trio.Event()
        self.finish = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gone = client_gone(scope)
        self.gone.append(gone)
        assert gone is not None
        with trio.CancelScope() as cancel_scope:
            gone.on_leave(cancel_scope.cancel)
            if self.start:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            self.running.set()
            await self.finish.wait()
        gone.on_leave(None)
        self.cancelled += cancel_scope.cancelled_caught
        if not cancel_scope.cancelled_caught:
            await send({"type": "http.response.body", "body": b"done", "more_body": False})
        else:
            while (message := await receive())["type"] != "http.disconnect":
                pass
            self.received.append(message["type"])


async def serving(app: App, body: Callable[[Connection], Awaitable[None]]) -> None:
    with trio.fail_after(5):
        async with TaskGroup() as task_group:
            await body(Connection(app, task_group))


def test_a_client_that_closes_mid_answer_cancels_the_application_at_once() -> None:
    app = Leaving()

    async def body(connection: Connection) -> None:
        await connection.receive(REQUEST)
        await app.running.wait()
        [gone] = app.gone
        assert gone is not None and not gone.gone
        await connection.protocol.handle(Closed())  # the client's FIN or reset
        assert gone.gone  # told before the reading task goes on

    trio.run(serving, app, body)
    assert app.cancelled == 1
    assert app.received == ["http.disconnect"]  # the ASGI message still arrives


def test_a_client_that_leaves_before_the_answer_starts_is_reported() -> None:
    app = Leaving(start=False)  # still waiting on the upstream: nothing sent yet

    async def body(connection: Connection) -> None:
        await connection.receive(REQUEST)
        await app.running.wait()
        await connection.protocol.handle(Closed())

    trio.run(serving, app, body)
    assert app.cancelled == 1 and app.received == ["http.disconnect"]


def test_a_failed_write_reports_the_client_gone_and_the_send_returns() -> None:
    """The write that fails is the application's own: its send returns (Hypercorn finishes
    closing the stream) and the cancellation takes effect at its next checkpoint."""
    sends: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        gone = client_gone(scope)
        assert gone is not None
        with trio.CancelScope() as cancel_scope:
            gone.on_leave(cancel_scope.cancel)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            sends.append("head")
            connection.fail_writes = True
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            sends.append("body returned")
            await trio.sleep_forever()
        sends.append("cancelled" if cancel_scope.cancelled_caught else "not cancelled")

    connection: Connection

    async def body(served: Connection) -> None:
        nonlocal connection
        connection = served
        await served.receive(REQUEST)

    trio.run(serving, app, body)
    assert sends == ["head", "body returned", "cancelled"]
    assert connection.protocol.stream is None  # Hypercorn closed the stream as before


def test_a_complete_answer_and_the_next_keep_alive_request_are_not_a_client_leaving() -> None:
    app = Leaving()

    async def body(connection: Connection) -> None:
        for _ in range(2):
            app.running, app.finish = trio.Event(), trio.Event()
            await connection.receive(REQUEST)
            await app.running.wait()
            app.finish.set()
            while not connection.writes or not connection.writes[-1].endswith(b"0\r\n\r\n"):
                await trio.lowlevel.checkpoint()
        await connection.protocol.handle(Closed())  # the keep-alive client goes, idle

    trio.run(serving, app, body)
    first, second = app.gone
    assert first is not second  # one per request
    assert first is not None and not first.gone and second is not None and not second.gone
    assert app.cancelled == 0


def test_a_pipelined_request_is_not_a_client_leaving() -> None:
    app = Leaving()

    async def body(connection: Connection) -> None:
        async with trio.open_nursery() as nursery:
            # Both requests in one read: Hypercorn holds the second until the first is done.
            nursery.start_soon(connection.receive, REQUEST + REQUEST)
            await app.running.wait()
            [first] = app.gone
            assert first is not None and not first.gone
            app.running, finish = trio.Event(), app.finish
            app.finish = trio.Event()
            finish.set()
            await app.running.wait()  # the second request's answer has started
            app.finish.set()

    trio.run(serving, app, body)
    assert [g is not None and g.gone for g in app.gone] == [False, False]
    assert app.cancelled == 0


def test_a_callback_registered_after_the_client_left_runs_at_once() -> None:
    gone = ClientGone()
    gone.leave()
    calls: list[str] = []
    gone.on_leave(lambda: calls.append("left"))
    gone.leave()  # once only
    assert calls == ["left"]


def test_a_forgotten_callback_is_not_called() -> None:
    gone = ClientGone()
    calls: list[str] = []
    gone.on_leave(lambda: calls.append("left"))
    gone.on_leave(None)
    gone.leave()
    assert gone.gone and calls == []


def test_a_failing_callback_does_not_break_the_server() -> None:
    gone = ClientGone()

    def broken() -> None:
        raise ValueError("a bug in the application")

    gone.on_leave(broken)
    gone.leave()  # logged, not raised
    assert gone.gone


def test_another_server_gives_no_extension() -> None:
    assert client_gone({"type": "http", "extensions": {}}) is None
    assert client_gone({"type": "http"}) is None
    marker = ClientGone()
    assert client_gone({"extensions": {EXTENSION: marker}}) is marker


def test_the_hook_refuses_to_start_when_hypercorn_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handle(self: Any, event: Any) -> None:  # a handle of another shape
        return None

    monkeypatch.setattr(HTTPStream, "handle", handle)
    with pytest.raises(RuntimeError, match=r"pooler\.client_gone"):
        report_client_gone()


def test_the_server_config_installs_the_hook() -> None:
    hypercorn_config("127.0.0.1", 0)
    assert getattr(HTTPStream.handle, "_reports_client_gone", False)
