"""A streamed answer's head held for its first piece (issue 17: SSE time to first byte).

An application that has its body's first piece at hand marks its `http.response.start`
with BODY_FOLLOWS: the server writes the head and that piece in one write instead of two.
The bytes on the wire are those of the unmarked answer; only the writes differ. A start
without the mark is written at once. The edge cases: an application that ends (raises)
between the head and its piece, a body that ends right after the head, HEAD, HTTP/1.0,
keep-alive, a client that leaves while the head is held."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from pooler.http_server.protocol import Http1Protocol
from pooler.http_server.response_writer import BODY_FOLLOWS
from tests.http1_support import config, each_write

GET = b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n"
SSE = [(b"content-type", b"text/event-stream")]
PIECES = [b"data: %d\n\n" % i for i in range(3)]
LAST = b"0\r\n\r\n"


def streaming(marked: bool, plan: str = "stream") -> Any:
    """An ASGI app answering every request with a stream: `plan` says what follows the
    start ("stream": three pieces then the end; "end": the end at once; "raise": the app
    fails; "leave": it waits for the client to leave)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body", False):
            pass
        start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": SSE}
        if marked:
            start[BODY_FOLLOWS] = True
        await send(start)
        if plan == "raise":
            raise RuntimeError("the application failed after its head")
        if plan == "leave":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if plan == "stream":
            for piece in PIECES:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def writes(app: Any, pieces: list[bytes]) -> tuple[list[bytes], bool]:
    written, closed, _ = trio.run(each_write, Http1Protocol, pieces, config(), app)
    return written, closed


def test_a_marked_stream_writes_its_head_with_its_first_piece() -> None:
    """Two writes before (the head, then the first chunk), one after; the same bytes."""
    marked, marked_closed = writes(streaming(True), [GET])
    plain, plain_closed = writes(streaming(False), [GET])
    assert plain[0].endswith(b"Transfer-Encoding: chunked\r\n\r\n")  # unmarked: at once
    assert plain[1] == b"9\r\ndata: 0\n\n\r\n"
    assert marked[0] == plain[0] + plain[1]
    assert marked[1:] == plain[2:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n", LAST]
    assert not marked_closed and not plain_closed


def test_a_body_that_ends_right_after_a_marked_head_goes_with_it() -> None:
    marked, _ = writes(streaming(True, "end"), [GET])
    plain, _ = writes(streaming(False, "end"), [GET])
    assert b"".join(marked) == b"".join(plain)
    assert len(marked) == 1 and marked[0].endswith(b"\r\n\r\n" + LAST)


def test_an_app_failing_after_a_marked_head_still_gets_it_out() -> None:
    """The head held for a piece that never comes is written before the connection closes,
    as the unmarked head was."""
    marked, marked_closed = writes(streaming(True, "raise"), [GET])
    plain, plain_closed = writes(streaming(False, "raise"), [GET])
    assert marked == plain and len(plain) == 1 and plain[0].startswith(b"HTTP/1.1 200 ")
    assert marked_closed and plain_closed


def test_a_client_leaving_while_a_head_is_held_ends_cleanly() -> None:
    """Nothing is written to a client that left, and nothing waits for ever."""
    marked, _ = writes(streaming(True, "leave"), [GET])  # each_write's waits are bounded
    assert marked == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"HEAD /s HTTP/1.1\r\nHost: x\r\n\r\n" + GET,  # no body: the head is not held
        GET + GET,  # keep-alive: the next request is served after a marked answer
        b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
)
def test_marked_and_unmarked_answers_are_the_same_bytes(request_bytes: bytes) -> None:
    marked, marked_closed = writes(streaming(True), [request_bytes])
    plain, plain_closed = writes(streaming(False), [request_bytes])
    assert b"".join(marked) == b"".join(plain)
    assert marked_closed == plain_closed
    assert b"".join(plain).count(b"HTTP/1.1 200 ") == request_bytes.count(b"HTTP/1.1\r\n")


def test_a_head_request_is_written_as_unmarked() -> None:
    head = [b"HEAD /s HTTP/1.1\r\nHost: x\r\n\r\n"]
    assert writes(streaming(True), head) == writes(streaming(False), head)


def test_an_http10_stream_sends_its_head_with_its_first_piece() -> None:
    """A close-delimited body (HTTP/1.0): the pieces go unframed, the first with the head."""
    request = [b"GET /s HTTP/1.0\r\n\r\n"]
    marked, marked_closed = writes(streaming(True), request)
    plain, plain_closed = writes(streaming(False), request)
    assert marked[0] == plain[0] + plain[1] and plain[1] == PIECES[0]
    assert b"".join(marked) == b"".join(plain) and marked_closed and plain_closed
