"""pooler.http_server: the server's own HTTP/1.1 protocol answers every request stream as
Hypercorn's H11Protocol with the gateway's h11 wrappers did (the recorded answers in
tests/data/http1_answers.json, see tests/http1_support.py), reads and frames strictly on
its own, hands `Upgrade: h2c` and HTTP/2's preface to Hypercorn's H2Protocol, and is the
class Hypercorn's ProtocolWrapper builds once `hypercorn_config` ran."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from http1_support import CASES, answer, config, each_write, load_answers
from hypercorn.trio import serve

from pooler.http_server import Http1Protocol, serve_http1_ourselves
from pooler.http_server.request_reader import END, Refused, RequestReader, parse_head
from pooler.http_server.response_writer import (
    CHUNKED,
    LENGTH,
    UNFRAMED,
    Unsendable,
    frame_response,
)
from pooler.serving import hypercorn_config, serve_lifespan

ANSWERS = load_answers(Path(__file__).parent.parent / "data" / "http1_answers.json")


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_stream_gets_the_answer_h11_gave(name: str) -> None:
    assert trio.run(answer, Http1Protocol, CASES[name], config()) == ANSWERS[name]


def test_the_recorded_answers_cover_the_refusals() -> None:
    """The recording holds what the hostile-input rules promise (a guard on the data)."""
    status = {name: data[9:12] for name, (data, _, _) in ANSWERS.items()}
    for name in (
        "bare_lf",
        "obs_fold",
        "cl_te",
        "te_cl",
        "cl_conflict",
        "nul_in_value",
        "bad_request_line",
        "te_http10",
        "no_host",
        "post_chunked_trailer_bare_lf",
    ):
        assert status[name] == b"400", name
        assert b"connection: close" in ANSWERS[name][0].lower() and ANSWERS[name][1], name
    assert status["head_too_big_incomplete"] == b"431"
    assert status["te_gzip"] == status["te_twice"] == b"501"
    assert ANSWERS["expect_100"][0].startswith(b"HTTP/1.1 100 \r\n\r\nHTTP/1.1 200 ")
    assert ANSWERS["pipelined"][0].count(b"HTTP/1.1 200 ") == 2
    assert not ANSWERS["pipelined"][1]  # kept alive
    assert ANSWERS["head"][0][-4:] == b"\r\n\r\n"  # HEAD: no body


def test_a_fixed_length_answer_is_one_write_and_a_stream_one_per_piece() -> None:
    """A JSON answer's head goes out with its body; a body-less one's at its end; an SSE
    stream's head at once, then one write per piece and one for its end."""
    request = b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n"
    json_writes, _, _ = trio.run(each_write, Http1Protocol, [request % b"/"], config())
    assert len(json_writes) == 1 and json_writes[0].startswith(b"HTTP/1.1 200 ")
    assert json_writes[0].endswith(b"}")
    head_writes, _, _ = trio.run(
        each_write, Http1Protocol, [b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"], config()
    )
    assert len(head_writes) == 1 and head_writes[0].endswith(b"\r\n\r\n")
    sse, _, _ = trio.run(each_write, Http1Protocol, [request % b"/stream"], config())
    assert sse[0].endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert sse[1:] == [b"9\r\ndata: %d\n\n\r\n" % i for i in range(3)] + [b"0\r\n\r\n"]


def test_a_pipelined_request_waits_for_the_answer_before_it() -> None:
    """While an answer is going, the next request is not read (the read loop pauses, as
    with h11), and is served once the answer is complete."""
    pieces = [b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"]
    data, closed, paused = trio.run(answer, Http1Protocol, pieces, config())
    assert data.count(b"HTTP/1.1 200 ") == 2 and not closed and not paused


def test_keep_alive_max_requests_closes_after_the_last() -> None:
    pieces = [b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"]
    served = config(keep_alive_max_requests=1)
    data, closed, _ = trio.run(answer, Http1Protocol, pieces, served)
    assert data.count(b"HTTP/1.1 200 ") == 1 and b"connection: close" in data and closed


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_request_arriving_in_pieces_reads_the_same(piece: int) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    reader = RequestReader(16 * 1024)
    heads: list[Any] = []
    body = b""
    for start in range(0, len(data), piece):
        reader.buffer += data[start : start + piece]
        while True:
            if not heads:
                head = reader.read_head()
                if head is None:
                    break
                heads.append(head)
                continue
            read = reader.read_body()
            if read is None:
                break
            if read is END:
                assert body == b"abc" and heads[0].chunked and heads[0].method == b"POST"
                return
            assert isinstance(read, bytes)
            body += read
    raise AssertionError("the body never ended")


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c", 400),  # obs-fold (checked by the caller)
        (b"GET / HTTP/1.1\r\nHost: x\r\nA : b", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00", 400),
        (b"GET / HTTP/1.1", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity", 501),
        (b"GET /\x7f HTTP/1.1\r\nHost: x", 400),
    ],
)
def test_malformed_heads_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        if b"\r\n " in head:
            reader = RequestReader(16 * 1024)
            reader.buffer += head + b"\r\n\r\n"
            reader.read_head()
        else:
            parse_head(head)
    assert refused.value.status == status


def test_heads_are_read_as_h11_read_them() -> None:
    head = parse_head(
        b"POST /v1/x?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nX-Ows: \t a\tb \t\r\n"
        b"X-Empty:\r\nConnection: Keep-Alive, Close\r\nExpect: 100-continue"
    )
    assert head.headers == [
        (b"host", b"x"),
        (b"content-length", b"2"),
        (b"x-ows", b"a\tb"),
        (b"x-empty", b""),
        (b"connection", b"Keep-Alive, Close"),
        (b"expect", b"100-continue"),
    ]
    assert (head.length, head.keep_alive, head.expects_100) == (2, False, True)
    assert not parse_head(b"GET / HTTP/1.0").keep_alive
    assert not parse_head(b"POST / HTTP/1.0\r\nExpect: 100-continue").expects_100


def test_response_framing() -> None:
    json_head = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    framed = frame_response(200, json_head, b"GET", b"1.1", True)
    assert (
        framed.head
        == b"HTTP/1.1 200 \r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
    )
    assert (framed.body, framed.length, framed.keep_alive) == (LENGTH, 2, True)
    stream = frame_response(200, [(b"content-type", b"text/event-stream")], b"GET", b"1.1", True)
    assert stream.body == CHUNKED and stream.head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    old_client = frame_response(200, [], b"GET", b"1.0", False)
    assert old_client.body == UNFRAMED and not old_client.keep_alive
    assert old_client.head == b"HTTP/1.1 200 \r\nConnection: close\r\n\r\n"
    head = frame_response(200, json_head, b"HEAD", b"1.1", True)
    assert (head.body, head.length) == (LENGTH, 0) and b"content-length: 2" in head.head
    assert frame_response(204, [], b"GET", b"1.1", True).body == LENGTH
    with pytest.raises(Unsendable):
        frame_response(200, [(b"x-a", b"b\r\nx-injected: 1")], b"GET", b"1.1", True)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _first_answer(request: bytes) -> bytes:
    served = hypercorn_config("127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, _app, served)
        port = int(binds[0].rsplit(":", 1)[1])
        with trio.fail_after(20), socket.create_connection(("127.0.0.1", port)) as client:
            client.setblocking(False)
            sock = trio.socket.from_stdlib_socket(client)
            await sock.send(request)
            received = b""
            while b"\r\n\r\n" not in received:
                data = await sock.recv(65536)
                assert data, received
                received += data
        nursery.cancel_scope.cancel()
    return received


def test_h2c_is_handed_to_http2_through_hypercorns_own_server() -> None:
    h2c = (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUPGRADE: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    )
    plain = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert trio.run(_first_answer, plain).startswith(b"HTTP/1.1 200 ")
    switched = trio.run(_first_answer, h2c)
    assert switched.startswith(b"HTTP/1.1 101 \r\n") and b"upgrade: h2c" in switched


def test_the_server_builds_our_protocol_and_installs_it_once() -> None:
    import hypercorn.protocol as wrapper_module

    hypercorn_config("127.0.0.1", 0)
    assert getattr(wrapper_module, "H11Protocol") is Http1Protocol  # noqa: B009
    serve_http1_ourselves()
    assert getattr(wrapper_module, "H11Protocol") is Http1Protocol  # noqa: B009


def test_it_refuses_to_start_if_hypercorn_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn.protocol as wrapper_module
    from hypercorn.protocol.h11 import H11Protocol

    async def handle(self: Any, event: Any) -> None:
        await self.protocol.handle(event)

    monkeypatch.setattr(wrapper_module, "H11Protocol", H11Protocol)
    monkeypatch.setattr(wrapper_module.ProtocolWrapper, "handle", handle)
    with pytest.raises(RuntimeError, match="Hypercorn changed"):
        serve_http1_ourselves()


def test_the_grammar_is_h11s() -> None:
    """The patterns copied from h11 (0.16) are still h11's, so a head reads as h11 read it
    (compared without their groups, which only name or capture)."""
    from h11._abnf import chunk_header, header_field, request_line

    from pooler.http_server import request_reader

    def bare(pattern: str | bytes) -> str:
        text = pattern.decode() if isinstance(pattern, bytes) else pattern
        text = re.sub(r"\(\?P<\w+>|\(\?:", "(", text)
        return text.replace("(", "").replace(")", "")

    assert bare(header_field) == bare(request_reader.HEADER_LINE)
    assert bare(request_line) == bare(request_reader._REQUEST_LINE.pattern)
    assert bare(chunk_header) == bare(request_reader._CHUNK_HEADER.pattern)
