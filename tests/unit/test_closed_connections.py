"""A keep-alive connection the client closes ends at once, through Hypercorn's own server
with the gateway's config (pooler.closed_connections)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from http1_support import connection_tasks
from hypercorn.trio import serve, tcp_server

from pooler.closed_connections import end_idle_timer_with_reading
from pooler.serving import hypercorn_config, serve_lifespan

ANSWER = b'{"ok":true}'


async def json_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER, "more_body": False})


async def one_request_then_close(port: int, pause_s: float) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setblocking(False)
        sock = trio.socket.from_stdlib_socket(client)
        await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while not received.endswith(ANSWER):
            received += await sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        await trio.sleep(pause_s)  # the server's keep-alive timer is running by now


@pytest.mark.parametrize("pause_s", [0.0, 0.2])
async def test_a_connection_closed_between_requests_ends_at_once(pause_s: float) -> None:
    config = hypercorn_config("127.0.0.1", 0)
    assert config.keep_alive_timeout > 30  # what a left-behind connection would wait for
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, json_app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        with trio.fail_after(10):
            for _ in range(5):
                await one_request_then_close(port, pause_s)
        with trio.fail_after(5):  # not keep_alive_timeout (75 s)
            while connection_tasks():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def test_refuses_to_start_if_hypercorn_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    hypercorn_config("127.0.0.1", 0)  # installed
    original = tcp_server.TCPServer._read_data.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(tcp_server.TCPServer, "_read_data", original)

    async def run_without_timer(self: Any) -> None:
        pass

    monkeypatch.setattr(tcp_server.TCPServer, "run", run_without_timer)
    with pytest.raises(RuntimeError, match="Hypercorn changed"):
        end_idle_timer_with_reading()
