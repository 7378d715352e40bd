"""Yields to the event loop a short request costs on the server's side (issue 17: at c=1
each is a whole turn of the loop, an epoll_wait(2) and trio's scheduling). Driven through
the server's own HTTP/1.1 protocol and Hypercorn's stream (tests/http1_support.py), the
application's task counted with a trio Instrument: nothing here depends on timing."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from http1_support import config, each_write
from turn_counts import counting_reschedules

from pooler.http_server import Http1Protocol

BODY = b'{"model":"m","input":"hi"}'
REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
ANSWER = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


class App:
    """Reads the body, then answers with a fixed-length JSON body (start, then the body),
    counting its own task's reschedules while answering; then reads on (the disconnect)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answer_turns = -1
        self.after: dict[str, Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.received.append(dict(message))
            if not message.get("more_body", False):
                break
        with counting_reschedules() as counter:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": ANSWER})
        self.answer_turns = counter.count
        with trio.fail_after(5):
            self.after = dict(await receive())


def serve(pieces: list[bytes]) -> tuple[App, list[bytes]]:
    app = App()
    writes, closed, _ = trio.run(each_write, Http1Protocol, pieces, config(), app)
    assert not closed
    return app, writes


def test_a_body_that_came_with_the_head_is_handed_over_in_one_message() -> None:
    """One channel send by the read loop and one receive by the application, each a yield
    (before: the body with more_body, then an empty end, two of each)."""
    app, writes = serve([REQUEST])
    assert app.received == [{"type": "http.request", "body": BODY, "more_body": False}]
    assert writes == [writes[0]] and writes[0].endswith(b"\r\n\r\n" + ANSWER)


def test_the_read_loop_hands_a_whole_body_over_without_a_yield() -> None:
    """The read loop's handling of a request that came whole (head and body) takes no
    turn of the loop: the application's task is started and its one message queued
    (before: two channel sends, each a yield); the answer still comes."""
    from http1_support import server_protocol
    from hypercorn.events import RawData
    from hypercorn.trio.task_group import TaskGroup

    async def run() -> tuple[int, list[bytes]]:
        writes: list[bytes] = []

        async def send(event: Any) -> None:
            if isinstance(event, RawData):
                writes.append(bytes(event.data))

        app = App()
        async with TaskGroup() as task_group:
            protocol = server_protocol(Http1Protocol, app, config(), task_group, send)
            with counting_reschedules() as counter:
                await protocol.handle(RawData(data=REQUEST))
            with trio.fail_after(5):
                while not writes:
                    await trio.lowlevel.checkpoint()
            task_group._nursery.cancel_scope.cancel()  # type: ignore[union-attr]
        return counter.count, writes

    turns, writes = trio.run(run)
    assert turns == 0
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(ANSWER)


def test_a_body_in_pieces_still_arrives_piece_by_piece() -> None:
    """A body still coming goes to the application as it arrives; its last piece carries
    the end."""
    head, body = REQUEST.split(b"\r\n\r\n")
    app, _ = serve([head + b"\r\n\r\n" + body[:5], body[5:9], body[9:]])
    assert b"".join(m["body"] for m in app.received) == body
    assert [m["body"] for m in app.received][:2] == [body[:5], body[5:9]]
    assert [m["more_body"] for m in app.received][-1] is False


def test_a_fixed_length_answer_yields_only_in_its_write() -> None:
    """The start (its head held for the body), the body and its end, and the complete
    stream's close (the application's `http.disconnect` queued) take no yield of their
    own: the one schedule point is the socket write (the test's `send` takes none; the
    server's takes one). Before: three more (the held head's checkpoint, the end's, the
    disconnect's channel send). The disconnect still reaches the application."""
    app, writes = serve([REQUEST])
    assert app.answer_turns == 0
    assert app.after == {"type": "http.disconnect"}
    assert len(writes) == 1


async def test_the_gateway_takes_a_queued_body_without_a_yield() -> None:
    """The gateway's request body (pooler.web.quart_http.PulledBody) takes a message the
    server has already queued on Hypercorn's memory channel without the receive's yield
    (before: one more reschedule of the application's task); one still to come is waited
    for as before, and a cancelled reader is still stopped."""
    from pooler.web.app import GatewayApp
    from pooler.web.quart_http import current_request, json_response

    app = GatewayApp()
    turns: list[int] = []

    @app.post("/")
    async def read() -> Any:
        with counting_reschedules() as counter:
            body = await current_request().body.read()
        turns.append(counter.count)
        return json_response({"size": len(body)})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"content-length", b"%d" % len(BODY))],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    with trio.fail_after(5):
        put, get = trio.open_memory_channel[dict[str, Any]](10)
        put.send_nowait({"type": "http.request", "body": BODY, "more_body": False})
        await app(dict(scope), get.receive, send)
        assert turns == [0]
        assert sent[0]["status"] == 200, sent
        assert orjson.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {"size": len(BODY)}

        # Not queued yet: the read waits for it.
        put, get = trio.open_memory_channel[dict[str, Any]](10)
        sent.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app, dict(scope), get.receive, send)
            await trio.sleep(0.01)
            await put.send({"type": "http.request", "body": BODY, "more_body": False})
        assert turns[-1] >= 1
        assert sent[0]["status"] == 200, sent
        assert orjson.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {"size": len(BODY)}
