"""Yields to the event loop a short request costs on the server's side (issue 17: at c=1
each is a whole turn of the loop, an epoll_wait(2) and trio's scheduling). Driven through
the server's own HTTP/1.1 protocol and Hypercorn's stream (tests/http1_support.py), the
application's task counted with a trio Instrument: nothing here depends on timing."""

from __future__ import annotations

from typing import Any

import trio
from http1_support import config, each_write

from pooler.http_server import Http1Protocol

BODY = b'{"model":"m","input":"hi"}'
REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
ANSWER = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


class Reschedules(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


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
        counter = Reschedules(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": ANSWER})
        finally:
            trio.lowlevel.remove_instrument(counter)
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
