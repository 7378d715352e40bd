"""pooler.upgrade_check: Hypercorn's HTTP/2 upgrade check runs only for a request that has an
`Upgrade` header or the `PRI` method; an `Upgrade: h2c` request is still switched to
HTTP/2 and an ordinary one still served, through Hypercorn's own server."""

from __future__ import annotations

import socket
import sys
from types import FrameType
from typing import Any

import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import serve

from pooler.serving import hypercorn_config, serve_lifespan

H2C = (
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUPGRADE: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)
PLAIN = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def first_answer(request: bytes) -> bytes:
    served = hypercorn_config("127.0.0.1", 0)
    served.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, served)
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


def test_only_a_possible_upgrade_is_checked() -> None:
    hypercorn_config("127.0.0.1", 0)
    installed = H11Protocol._check_protocol
    hypercorns = getattr(installed, "__wrapped__", installed).__code__
    checked: list[bytes] = []

    def watch(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is hypercorns and "event" in frame.f_locals:
            checked.append(frame.f_locals["event"].method)  # each start or resume

    sys.setprofile(watch)
    try:
        assert trio.run(first_answer, PLAIN).startswith(b"HTTP/1.1 200 ")
        assert trio.run(first_answer, H2C).startswith(b"HTTP/1.1 101 ")  # switched to HTTP/2
    finally:
        sys.setprofile(None)
    assert set(checked) == {b"GET"}  # the h2c request only
