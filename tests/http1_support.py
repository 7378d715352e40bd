"""Driving an HTTP/1.1 server protocol class in-process: Hypercorn's own `H11Protocol` (as
the gateway served with it until issue 17) or pooler.http_server's `Http1Protocol`, fed
bytes in pieces as the TCPServer would, its writes recorded.

`CASES` are honest and malformed request streams; tests/data/http1_answers.json holds what
Hypercorn's H11Protocol with the gateway's h11 wrappers (pooler.http1_framing,
request_head, response_head, chunked_body, upgrade_check, as of main before issue 17's
own protocol) answered to each: the bytes, whether it closed the connection and whether
its read loop was left paused (a pipelined request waiting for an answer)."""

from __future__ import annotations

import json
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.events import Closed, RawData
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from pooler.serving import hypercorn_config

Answer = tuple[bytes, bool, bool]  # the bytes written, closed, left paused


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers by path: `/early` before reading the body, `/stream` an unknown-length body,
    `/empty` 204, `/close` with `connection: close`, `/nolength` a body without a length;
    otherwise a JSON echo of the method, the body's size and the headers it was given."""
    path = scope["path"]
    headers = [(b"content-type", b"application/json")]
    if path == "/early":
        body = b'{"error":1}'
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if path == "/stream":
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            piece = b"data: %d\n\n" % i
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/close":
        headers.append((b"connection", b"close"))
    if path == "/nolength":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"abc"})
        return
    seen = [[name.decode(), value.decode("latin1")] for name, value in scope["headers"]]
    body = json.dumps({"method": scope["method"], "size": size, "headers": seen}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def config(**settings: Any) -> Any:
    served = hypercorn_config("127.0.0.1", 0)  # installs the gateway's wrappers
    served.include_date_header = False  # the same bytes in every run
    for name, value in settings.items():
        setattr(served, name, value)
    return served


def server_protocol(
    protocol_class: Any, app: Any, served: Any, task_group: TaskGroup, send: Any
) -> Any:
    """A server connection's protocol as Hypercorn's TCPServer builds one: plain TCP from
    127.0.0.1:5000 to :8000, `send` taking its RawData and Closed events."""
    return protocol_class(
        ASGIWrapper(app),
        served,
        WorkerContext(None),
        task_group,
        ConnectionState({}),
        False,
        ("127.0.0.1", 5000),
        ("127.0.0.1", 8000),
        send,
    )


async def answer(protocol_class: Any, pieces: list[bytes], served: Any = None) -> Answer:
    """What a connection served by `protocol_class` writes for `pieces`, each fed after the
    previous one is handled and the application has had its turns."""
    writes, closed, paused = await each_write(protocol_class, pieces, served)
    return b"".join(writes), closed, paused


async def each_write(
    protocol_class: Any, pieces: list[bytes], served: Any = None, asgi_app: Any = None
) -> tuple[list[bytes], bool, bool]:
    """`answer`, with the bytes of each write apart (served by `asgi_app`, `app` if None)."""
    writes: list[bytes] = []
    closed = False
    served = served or config()
    async with TaskGroup() as task_group:
        protocol: Any = None

        async def send(event: Any) -> None:
            nonlocal closed
            if isinstance(event, RawData):
                if not closed:
                    writes.append(bytes(event.data))
            elif isinstance(event, Closed) and not closed:
                closed = True  # as the TCPServer: the stream closed, the protocol told
                await protocol.handle(Closed())

        protocol = server_protocol(protocol_class, asgi_app or app, served, task_group, send)

        async def feed() -> None:
            for piece in pieces:
                if closed:
                    break
                await protocol.handle(RawData(data=piece))
                for _ in range(20):
                    await trio.lowlevel.checkpoint()

        # A read loop left waiting (a pipelined request behind an unfinished answer)
        # never returns: it is let go after a while, and that is part of the answer.
        with trio.move_on_after(0.3) as waited:
            await feed()
        for _ in range(50):
            await trio.lowlevel.checkpoint()
        result = (writes, closed, waited.cancelled_caught)
        if not closed:
            await protocol.handle(Closed())
        nursery: Any = task_group._nursery
        nursery.cancel_scope.cancel()
    return result


def _post(head: bytes, body: bytes = b"", path: bytes = b"/") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body


_H = b"Host: x\r\n"
_GET = b"GET / HTTP/1.1\r\n" + _H + b"\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_BIG = b"X-Big: " + b"a" * 17000 + b"\r\n"

CASES: dict[str, list[bytes]] = {
    "get": [_GET],
    "get_lower_method": [b"get / HTTP/1.1\r\n" + _H + b"\r\n"],
    "post_length": [_post(b"Content-Length: 5\r\n", b"hello")],
    "post_length_pieces": [_post(b"Content-Length: 5\r\n", b"he"), b"l", b"lo"],
    "post_chunked": [_post(_CHUNKED, b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")],
    "post_chunked_trailer": [_post(_CHUNKED, b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")],
    "post_chunked_bad_size": [_post(_CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n")],
    "post_chunked_bad_footer": [_post(_CHUNKED, b"3\r\nabcX\r\n0\r\n\r\n")],
    "post_chunked_trailer_bare_lf": [_post(_CHUNKED, b"0\r\nX-T: 1\n\n")],
    "post_chunked_trailer_bad": [_post(_CHUNKED, b"0\r\nBad Name: 1\r\n\r\n")],
    "pipelined": [b"GET /1 HTTP/1.1\r\n" + _H + b"\r\nGET /2 HTTP/1.1\r\n" + _H + b"\r\n"],
    "pipelined_post": [
        _post(b"Content-Length: 2\r\n", b"ab") + _post(b"Content-Length: 1\r\n", b"c") + _GET
    ],
    "pipelined_bad_second": [_GET + b"GET /2 HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"],
    "keepalive_two": [b"GET /1 HTTP/1.1\r\n" + _H + b"\r\n", _GET],
    "stream": [b"GET /stream HTTP/1.1\r\n" + _H + b"\r\n"],
    "stream_http10": [b"GET /stream HTTP/1.0\r\n\r\n"],
    "stream_close": [b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "nolength": [b"GET /nolength HTTP/1.1\r\n" + _H + b"\r\n"],
    "nolength_http10": [b"GET /nolength HTTP/1.0\r\n\r\n"],
    "head": [b"HEAD / HTTP/1.1\r\n" + _H + b"\r\n"],
    "head_stream": [b"HEAD /stream HTTP/1.1\r\n" + _H + b"\r\n", _GET],
    "head_http10_nolength": [b"HEAD /nolength HTTP/1.0\r\n\r\n"],
    "empty_204": [b"GET /empty HTTP/1.1\r\n" + _H + b"\r\n", _GET],
    "http10": [b"GET / HTTP/1.0\r\n\r\n"],
    "http10_keepalive": [
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    "connection_close_then_more": [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + _GET
    ],
    "connection_close": [b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", _GET],
    "connection_tokens_close": [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close, foo\r\n\r\n"
    ],
    "response_close": [b"GET /close HTTP/1.1\r\n" + _H + b"\r\n", _GET],
    "early_answer": [_post(b"Content-Length: 10\r\n", b"abc", b"/early"), b"defghij"],
    "expect_100": [_post(b"Content-Length: 5\r\nExpect: 100-continue\r\n"), b"hello"],
    "expect_100_with_body": [_post(b"Content-Length: 5\r\nExpect: 100-Continue\r\n", b"hello")],
    "expect_100_http10": [
        b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
    ],
    "expect_100_early": [_post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"", b"/early")],
    "cl_duplicate_equal": [_post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"ab")],
    "cl_list_equal": [_post(b"Content-Length: 2, 2\r\n", b"ab")],
    "cl_conflict": [_post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"{}   ")],
    "cl_list_conflict": [_post(b"Content-Length: 5, 6\r\n", b"{}   ")],
    "cl_negative": [_post(b"Content-Length: -1\r\n")],
    "cl_plus": [_post(b"Content-Length: +5\r\n", b"{}   ")],
    "cl_hex": [_post(b"Content-Length: 0x5\r\n", b"{}   ")],
    "cl_21_digits": [_post(b"Content-Length: 000000000000000000001\r\n", b"a")],
    "cl_20_digits": [_post(b"Content-Length: 00000000000000000001\r\n", b"a")],
    "cl_te": [_post(b"Content-Length: 5\r\n" + _CHUNKED, b"0\r\n\r\n")],
    "te_cl": [_post(_CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n")],
    "te_gzip": [_post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n")],
    "te_twice": [_post(_CHUNKED + _CHUNKED, b"0\r\n\r\n")],
    "te_upper": [_post(b"Transfer-Encoding: CHUNKED\r\n", b"0\r\n\r\n")],
    "te_http10": [b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    "bare_lf": [b"GET / HTTP/1.1\nHost: x\n\n"],
    "bare_lf_end": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\n\r\n"],
    "bare_cr": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n"],
    "obs_fold": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"],
    "obs_fold_tab": [
        _post(b"Content-Length: 0\r\nTransfer-Encoding:\r\n\tchunked\r\n", b"0\r\n\r\n")
    ],
    "space_before_colon": [_post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n")],
    "nul_in_value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n"],
    "ctl_in_value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\x7f\r\n\r\n"],
    "obs_text_and_ows": [
        b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: codex (x; y) \xe9\r\n"
        b"X-Ows: \t a\tb \t\r\nX-Empty:\r\n\r\n"
    ],
    "ctl_in_name": [b"GET / HTTP/1.1\r\nHost: x\r\nX\x01A: b\r\n\r\n"],
    "no_colon": [b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"],
    "bad_request_line": [b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "bad_version": [b"GET / HTTP/11\r\nHost: x\r\n\r\n"],
    "target_space": [b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"],
    "leading_space": [b" GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "leading_crlf": [b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "tls_hello_incomplete": [b"\x16\x03\x01"],
    "garbage_incomplete": [b"hello"],
    "no_host": [b"GET / HTTP/1.1\r\n\r\n"],
    "two_hosts": [b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"],
    "http12": [b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"],
    "head_too_big_incomplete": [b"GET / HTTP/1.1\r\nHost: x\r\n" + _BIG],
    "head_too_big_pieces": [b"GET / HTTP/1.1\r\nHost: x\r\n" + _BIG[:9000], _BIG[9000:]],
    "head_big_complete": [b"GET / HTTP/1.1\r\nHost: x\r\n" + _BIG + b"\r\n"],
    "head_15k_pieces": [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-B: " + b"b" * 8000,
        b"c" * 7000 + b"\r\n\r\n",
    ],
    "chunk_header_too_long": [_post(_CHUNKED, b"1;" + b"e" * 17000)],
    "upgrade_other": [
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
        _GET,
    ],
    "upgrade_h2c_with_body": [
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nab"
    ],
    "one_byte_at_a_time": [bytes([b]) for b in _post(b"Content-Length: 3\r\n", b"abc")],
    "chunked_byte_at_a_time": [
        bytes([b]) for b in _post(_CHUNKED, b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    ],
    "data_after_refusal": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", _GET],
}


def load_answers(path: Any) -> dict[str, Answer]:
    recorded = json.loads(path.read_text())
    return {
        name: (data.encode("latin1"), closed, paused)
        for name, (data, closed, paused) in recorded.items()
    }


def dump_answers(answers: dict[str, Answer]) -> str:
    return json.dumps(
        {
            name: [data.decode("latin1"), closed, paused]
            for name, (data, closed, paused) in answers.items()
        },
        indent=0,
        sort_keys=True,
    )


def connection_tasks() -> int:
    """Hypercorn's connection handlers alive in this run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += task.name.endswith("_run_handler")
            nurseries.extend(task.child_nurseries)
    return count
