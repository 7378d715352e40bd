"""pooler.request_head: the server reads a request head's header lines with one regex match,
with exactly h11's result: the same `h11.Request`, or the same refusal, for honest heads,
malformed ones and a few thousand generated ones; and the gateway's server connection
reads through it."""

from __future__ import annotations

import random
import re
import socket
from typing import Any

import h11
import h11._readers
import pytest
import trio
from h11._readers import maybe_read_from_IDLE_client
from hypercorn.trio import serve

from pooler import http1_framing, request_head
from pooler.http1_framing import StrictServerConnection
from pooler.request_head import check_request_reader, read_request
from pooler.serving import hypercorn_config, serve_lifespan

CODEX_HEAD = (
    b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
    b"authorization: Bearer sk-cxp-0123\r\noriginator: codex_exec\r\n"
    b"user-agent: codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)\r\n"
    b"accept: text/event-stream\r\ncontent-type: application/json\r\n"
    b'session-id: 0199a213\r\nx-codex-turn-metadata: {"turn_id":"1","model":"gpt-5"}\r\n'
    b"content-length: 2\r\n\r\n"
)
HEADS = [
    CODEX_HEAD,
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Ows:\t a \t b\t \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Obs: \x80\xff caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b:c:d\r\nX-B::\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A : y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x0bc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x7fc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
    b"GET / HTTP/1.1\r\n\tX-A: b\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\nX-A: b\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",  # no Host in HTTP/1.1
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n",
    b"\x16\x03\x01",
    b"GET / HTTP/1.1\r\nHost: x\r\n",  # incomplete
]


def read(reader: object, data: bytes) -> object:
    return request_head._read(reader, data)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", HEADS)
def test_it_reads_each_head_as_h11_does(data: bytes) -> None:
    assert read(read_request, data) == read(maybe_read_from_IDLE_client, data)


def test_generated_heads_read_as_h11_reads_them() -> None:
    pieces = [b"a", b"X-Y", b":", b" ", b"\t", b"\x00", b"\x80", b"\r", b"\x7f", b"\x0c", b"!"]
    value_pieces = [b"a", b"b c", b" ", b"\t", b"\x80", b":", b"!", b"~"] * 6 + pieces
    generator = random.Random(17)
    compared = accepted = 0

    def line() -> bytes:
        if generator.random() < 0.3:  # anything
            return b"".join(generator.choice(pieces) for _ in range(generator.randint(1, 8)))
        value = b"".join(generator.choice(value_pieces) for _ in range(generator.randint(0, 6)))
        return b"X-" + generator.choice([b"A", b"b", b"c-d", b"e f", b"g\x80"]) + b":" + value

    for _ in range(3000):
        lines = [line() for _ in range(generator.randint(1, 4))]
        lines.insert(generator.randint(0, len(lines)), b"Host: x")
        data = b"GET / HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
        ours = read(read_request, data)
        assert ours == read(maybe_read_from_IDLE_client, data), data
        compared += 1
        accepted += ours[0] != "refused"  # type: ignore[index]
    assert compared == 3000 and 300 < accepted < 2700  # both outcomes were exercised


def test_the_server_connection_reads_heads_without_h11s_line_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b"{}"
    data = (CODEX_HEAD + body) * 2
    plain = h11.Connection(h11.SERVER)
    expected = _events(plain, data)

    def per_line(lines: object) -> object:
        raise AssertionError("h11 read the header lines one by one")

    monkeypatch.setattr(h11._readers, "_decode_header_lines", per_line)
    assert _events(StrictServerConnection(16 * 1024), data) == expected


def _events(connection: h11.Connection, data: bytes) -> list[object]:
    """What `connection` reads from `data`, two keep-alive requests, answering each."""
    connection.receive_data(data)
    events: list[object] = []
    for _ in range(2):
        while type(event := connection.next_event()) is not h11.EndOfMessage:
            if isinstance(event, h11.Request):
                events.append((event.method, event.target, event.headers.raw_items()))
            else:
                events.append(event)
        connection.send(h11.Response(status_code=204, headers=[]))
        connection.send(h11.EndOfMessage())
        connection.start_next_cycle()
    return events


def test_it_refuses_to_start_when_the_readings_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    check_request_reader()
    monkeypatch.setattr(request_head, "_header_block_re", re.compile(rb"(?s).*"))
    with pytest.raises(RuntimeError, match="h11 changed"):
        check_request_reader()


async def codex_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    seen = [scope[key] for key in ("method", "path", "query_string", "http_version")]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = repr((*seen, scope["headers"], len(body))).encode() + b" end"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def served_bytes(requests: list[bytes]) -> bytes:
    """`requests` on one connection to Hypercorn's server as the gateway configures it:
    every byte the client got (the app echoes what it was given)."""
    served = hypercorn_config("127.0.0.1", 0)
    served.bind = ["127.0.0.1:0"]
    served.include_date_header = False  # the same bytes on every run
    received = bytearray()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, codex_app, served)
        port = int(binds[0].rsplit(":", 1)[1])
        with trio.fail_after(20), socket.create_connection(("127.0.0.1", port)) as client:
            client.setblocking(False)
            sock = trio.socket.from_stdlib_socket(client)
            for number, request in enumerate(requests, start=1):
                await sock.send(request)
                while received.count(b" end") < number:
                    data = await sock.recv(65536)
                    assert data, received
                    received += data
        nursery.cancel_scope.cancel()
    return bytes(received)


def test_the_app_and_the_client_get_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = (
        b"GET /a%20b?c=d HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Ows: \t a\tb \r\nX-Obs: \xe9\r\n\r\n"
    )
    requests = [CODEX_HEAD + b"{}", odd, CODEX_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"{}"]
    ours = trio.run(served_bytes, requests)
    monkeypatch.setattr(http1_framing, "read_request", maybe_read_from_IDLE_client)
    assert trio.run(served_bytes, requests) == ours  # h11's own reader
    assert ours.count(b"HTTP/1.1 200 ") == 3 and b"(b'x-empty', b'')" in ours
