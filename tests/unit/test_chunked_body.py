"""pooler.chunked_body: a streamed body piece is framed without h11, with the same bytes and
the same writes as Hypercorn and h11 produce, and everything else still goes through them.

Driven through Hypercorn's own `HTTPStream` and `H11Protocol` (0.18) with a recording
`send`, each answer twice: through the installed `app_send` and through Hypercorn's own
(`__wrapped__`); then over a real socket through Hypercorn's server, with and without the
response-writing wrappers."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import pytest
import trio
from h11._writers import ChunkedWriter
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio import serve, tcp_server
from hypercorn.trio.worker_context import WorkerContext

from pooler.chunked_body import chunk, frame_chunks_directly
from pooler.serving import ServerConfig, hypercorn_config, serve_lifespan

Message = dict[str, Any]
NOTHING: Any = None  # what these tests never use: the application, its task group
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
PIECES = [b'data: {"n":1}\n\n', b"data: " + b"x" * 300 + b"\n\n", b": ping\n\n"]


def config() -> ServerConfig:
    made = hypercorn_config("127.0.0.1", 0)  # installs the wrappers
    made.include_date_header = False  # the same bytes on every run
    return made


class Recorder:
    """The protocol's `send`: what it wrote, and the other events it told the server."""

    def __init__(self) -> None:
        self.transcript: list[bytes | str] = []

    async def __call__(self, event: Any) -> None:
        self.transcript.append(event.data if type(event) is RawData else type(event).__name__)

    @property
    def wire(self) -> bytes:
        return b"".join(item for item in self.transcript if isinstance(item, bytes))


def http_stream(request: bytes, method: str) -> tuple[HTTPStream, H11Protocol, Recorder, list[Any]]:
    """Hypercorn's stream and protocol after `request`; the h11 events its protocol sent."""
    recorder = Recorder()
    context = WorkerContext(None)
    proto = H11Protocol(NOTHING, config(), context, NOTHING, NOTHING, False, None, None, recorder)
    proto.connection.receive_data(request)
    while type(proto.connection.next_event()) is not h11.EndOfMessage:
        pass
    through_h11: list[Any] = []
    send_h11_event = proto._send_h11_event

    async def counted(event: Any) -> None:
        through_h11.append(type(event).__name__)
        await send_h11_event(event)

    proto._send_h11_event = counted  # type: ignore[method-assign]
    stream = HTTPStream(
        NOTHING, proto.config, context, NOTHING, False, None, None, proto.stream_send, 1
    )
    stream.scope = {"method": method, "http_version": "1.1", "headers": []}  # type: ignore[typeddict-item]
    stream.start_time = 0.0
    return stream, proto, recorder, through_h11


def answer(
    messages: list[Message], request: bytes = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
) -> dict[str, Any]:
    """`messages` sent to both `app_send`s: each one's transcript, h11 events and state."""
    method = request.split(b" ")[0].decode()
    config()
    installed = HTTPStream.app_send
    runs = {}
    for name, app_send in (("new", installed), ("old", installed.__wrapped__)):  # type: ignore[attr-defined]
        stream, proto, recorder, through_h11 = http_stream(request, method)

        async def send_all(
            app_send: Callable[[HTTPStream, Any], Awaitable[None]] = app_send,
            stream: HTTPStream = stream,
        ) -> None:
            for message in messages:
                await app_send(stream, message)

        trio.run(send_all)
        runs[name] = (recorder.transcript, through_h11, proto.connection.our_state)
    assert runs["new"][0] == runs["old"][0]  # the same writes, the same bytes
    assert runs["new"][2] is runs["old"][2]  # h11 ends in the same state
    return {"transcript": runs["new"][0], "through_h11": runs["new"][1], "state": runs["new"][2]}


def start(headers: list[tuple[bytes, bytes]], status: int = 200) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: Any, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_a_chunk_is_what_h11_writes() -> None:
    for size in (1, 9, 15, 16, 255, 256, 4096, 65537, 1 << 20):
        data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        written: list[bytes] = []
        ChunkedWriter().send_data(data, written.append)
        assert chunk(data) == b"".join(written)


def test_an_sse_stream_frames_its_pieces_without_h11() -> None:
    result = answer([start(SSE), *(body(piece) for piece in PIECES), body(b"", more=False)])
    head, *pieces, end, recycled = result["transcript"]
    assert isinstance(head, bytes) and head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head
    assert pieces == [b"%x\r\n%b\r\n" % (len(p), p) for p in PIECES]  # one write each
    assert end == b"0\r\n\r\n" and recycled == "Updated"  # kept alive for the next request
    assert result["through_h11"] == ["Response", "EndOfMessage"]
    assert result["state"] is h11.IDLE


def test_the_last_piece_and_odd_bodies_go_through_h11() -> None:
    result = answer(
        [start(SSE), body(bytearray(b"data: 1\n\n")), body(b""), body(b"data: 2\n\n", more=False)]
    )
    assert result["through_h11"] == ["Response", "Data", "Data", "EndOfMessage"]
    assert result["transcript"][-2:] == [b"0\r\n\r\n", "Updated"]


def test_a_fixed_length_body_stays_with_h11() -> None:
    result = answer([start([(b"content-length", b"8")]), body(b"1234"), body(b"5678", more=False)])
    assert result["through_h11"] == ["Response", "Data", "Data", "EndOfMessage"]
    assert result["transcript"][0].endswith(b"\r\n\r\n1234")  # the held head, with its body


def test_a_head_request_gets_no_body_bytes() -> None:
    request = b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"
    result = answer([start(SSE), body(PIECES[0]), body(b"", more=False)], request)
    assert result["transcript"][0].endswith(b"\r\n\r\n") and result["transcript"][1] == b""
    assert "Data" not in result["through_h11"]


def test_a_body_less_status_gets_no_body_bytes() -> None:
    result = answer([start(SSE, status=204), body(PIECES[0]), body(b"", more=False)])
    assert result["transcript"][0].startswith(b"HTTP/1.1 204")
    assert result["through_h11"] == ["Response", "EndOfMessage"]


def test_an_http10_client_gets_an_unframed_body_and_a_close() -> None:
    request = b"GET / HTTP/1.0\r\nhost: x\r\n\r\n"
    result = answer([start(SSE), body(PIECES[0]), body(b"", more=False)], request)
    assert result["through_h11"] == ["Response", "Data", "EndOfMessage"]
    assert result["transcript"][1] == PIECES[0] and result["transcript"][-1] == "Closed"


def test_connection_close_still_closes() -> None:
    result = answer([start([*SSE, (b"connection", b"close")]), body(PIECES[0]), body(b"", False)])
    assert result["transcript"][1:] == [chunk(PIECES[0]), b"0\r\n\r\n", "Closed"]
    assert result["state"] is h11.MUST_CLOSE


def test_a_held_head_goes_out_with_the_first_piece() -> None:
    headers = [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]
    result = answer([start(headers), body(b"hello"), body(b"again"), body(b"", more=False)])
    assert result["through_h11"] == ["Response", "Data", "EndOfMessage"]
    assert result["transcript"][0].endswith(b"\r\n\r\n5\r\nhello\r\n")


def test_it_refuses_to_start_when_h11_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    def moved(self: Any, data: bytes, write: Callable[[bytes], Any]) -> None:
        write(b"%X\r\n%s\r\n" % (len(data), data))

    config()
    monkeypatch.setattr(HTTPStream, "app_send", HTTPStream.app_send.__wrapped__)  # type: ignore[attr-defined]
    monkeypatch.setattr(ChunkedWriter, "send_data", moved)
    with pytest.raises(RuntimeError, match="Hypercorn or h11 changed"):
        frame_chunks_directly()


async def sse_and_json_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["path"] == "/sse":
        await send(start(SSE))
        for piece in PIECES:
            await send(body(piece))
        await send(body(b"", more=False))
    else:
        await send(start([(b"content-type", b"application/json"), (b"content-length", b"11")]))
        await send(body(b'{"ok":true}', more=False))


async def wire_bytes(served: ServerConfig) -> bytes:
    """An SSE answer then a JSON one on one connection, through Hypercorn's server: every
    byte the client got."""
    served.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, sse_and_json_app, served)
        port = int(binds[0].rsplit(":", 1)[1])
        received = bytearray()
        with trio.fail_after(10), socket.create_connection(("127.0.0.1", port)) as client:
            client.setblocking(False)
            sock = trio.socket.from_stdlib_socket(client)
            for path, end in ((b"/sse", b"0\r\n\r\n"), (b"/json", b'{"ok":true}')):
                await sock.send(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
                while not received.endswith(end):
                    received += await sock.recv(65536)
        nursery.cancel_scope.cancel()
    return bytes(received)


def test_the_bytes_on_the_wire_are_hypercorns(monkeypatch: pytest.MonkeyPatch) -> None:
    served = config()  # installed before h11 is watched
    framed_by_h11: list[bytes] = []
    send_data = ChunkedWriter.send_data

    def counted(self: ChunkedWriter, data: bytes, write: Callable[[bytes], Any]) -> None:
        framed_by_h11.append(data)
        send_data(self, data, write)

    monkeypatch.setattr(ChunkedWriter, "send_data", counted)
    ours = trio.run(wire_bytes, served)
    assert framed_by_h11 == []  # the gateway's server (strict framing included) frames them
    for cls, name in (
        (HTTPStream, "app_send"),
        (H11Protocol, "_send_h11_event"),
        (tcp_server.TCPServer, "protocol_send"),
    ):
        monkeypatch.setattr(cls, name, getattr(cls, name).__wrapped__)
    assert trio.run(wire_bytes, served) == ours  # Hypercorn's own chain
    assert framed_by_h11 == PIECES
    assert ours.count(b"HTTP/1.1 200") == 2 and chunk(PIECES[1]) in ours
