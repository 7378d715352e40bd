"""The server's read of client sockets (pooler.closed_connections `read_client`, in
Hypercorn's `TCPServer._read_data` place), through Hypercorn's own server with the
gateway's config: a held stream's connection waits in one frame on the socket, no per-read
deadline scope, and what the read did is unchanged (bodies over several reads, pipelined
requests, a client's end of file, `read_timeout` when one is set, TLS)."""

from __future__ import annotations

import gc
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import trio
from http1_support import connection_tasks
from hypercorn.trio import serve
from tls_support import self_signed_pem

from pooler.serving import ServerConfig, hypercorn_config, serve_lifespan

DEADLINE = 10


async def app(scope: Any, receive: Any, send: Any) -> None:
    """`/held` sends one piece of a stream and holds it; otherwise the request body's size."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["path"] == "/held":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await trio.sleep_forever()
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def config(**changes: Any) -> ServerConfig:
    made = hypercorn_config("127.0.0.1", 0)
    for name, value in changes.items():
        setattr(made, name, value)
    return made


async def connect(port: int) -> trio.socket.SocketType:
    plain = socket.create_connection(("127.0.0.1", port))
    plain.setblocking(False)
    return trio.socket.from_stdlib_socket(plain)


async def read_answers(sock: trio.socket.SocketType, count: int) -> list[bytes]:
    """The bodies of `count` answers with a content-length."""
    received, bodies = b"", list[bytes]()
    while len(bodies) < count:
        head_end = received.find(b"\r\n\r\n")
        if head_end >= 0:
            head = received[:head_end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(received) >= head_end + 4 + length:
                assert head.startswith(b"http/1.1 200")
                bodies.append(received[head_end + 4 : head_end + 4 + length])
                received = received[head_end + 4 + length :]
                continue
        data = await sock.recv(65536)
        assert data, received
        received += data
    return bodies


def awaited_codes(task: trio.lowlevel.Task) -> Iterator[CodeType]:
    """The code of each coroutine (and generator) a task is suspended in, outermost first."""
    awaited: Any = task.coro
    while awaited is not None:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is not None:
            yield code
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        else:  # a coroutine's __await__ wrapper (TCPServer.__await__): the coroutine in it
            (awaited,) = gc.get_referents(awaited)


def connection_handlers() -> list[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found, nurseries = list[trio.lowlevel.Task](), list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            if task.name.endswith("_run_handler"):
                found.append(task)
            nurseries.extend(task.child_nurseries)
    return found


async def test_a_held_stream_waits_on_its_socket_in_one_frame() -> None:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config())
        sock = await connect(int(binds[0].rsplit(":", 1)[1]))
        with sock, trio.fail_after(DEADLINE):
            await sock.send(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while not received.endswith(b"data: 1\n\n\r\n"):
                received += await sock.recv(65536)
            await trio.testing.wait_all_tasks_blocked()
            (handler,) = connection_handlers()
            names = [code.co_name for code in awaited_codes(handler)]
            # TCPServer.run awaits the read loop, which awaits trio's wait for the fd
            # itself (the public function and the epoll manager's): no
            # SocketStream.receive_some, trio socket recv or _nonblocking_helper in between,
            # kept for the stream's life.
            loop = names.index("run", names.index("run_contained")) + 1
            assert names[loop + 1 : loop + 3] == ["wait_readable", "wait_readable"], names
            nursery.cancel_scope.cancel()


async def test_no_deadline_scope_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypercorn's loop opened `trio.fail_after(read_timeout or inf)` around every read."""
    opened: list[str] = []
    fail_after = trio.fail_after

    def counted(seconds: float) -> Any:
        opened.append(sys._getframe(1).f_code.co_filename)
        return fail_after(seconds)

    monkeypatch.setattr(trio, "fail_after", counted)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config())
        sock = await connect(int(binds[0].rsplit(":", 1)[1]))
        with sock, trio.move_on_after(DEADLINE) as guard:
            for _ in range(20):
                await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                assert await read_answers(sock, 1) == [b"0"]
        assert not guard.cancelled_caught
        nursery.cancel_scope.cancel()
    # One, the TLS handshake's deadline run() opens before it finds the stream is plain.
    assert len([name for name in opened if name.endswith("tcp_server.py")]) <= 1


async def test_bodies_pipelined_requests_and_end_of_file() -> None:
    big = 300_000  # several reads of 64 KiB
    post = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % big
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config())
        sock = await connect(int(binds[0].rsplit(":", 1)[1]))
        with sock, trio.fail_after(DEADLINE):
            await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n" * 3)
            assert await read_answers(sock, 3) == [b"0"] * 3
            await sock.send(post)
            sent = 0
            while sent < big:
                sent += await sock.send(b"x" * min(65_536, big - sent))
            assert await read_answers(sock, 1) == [str(big).encode()]
            sock.shutdown(socket.SHUT_WR)  # the client's end of file ends the connection
            assert await sock.recv(65536) == b""
            while connection_tasks():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_read_timeout_still_closes_a_silent_connection() -> None:
    """With a `read_timeout` (the gateway sets none) Hypercorn's own loop reads."""
    made = config(read_timeout=0.2, keep_alive_timeout=60.0)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, made)
        sock = await connect(int(binds[0].rsplit(":", 1)[1]))
        with sock, trio.fail_after(DEADLINE):  # not keep_alive_timeout
            await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert await read_answers(sock, 1) == [b"0"]
            assert await sock.recv(65536) == b""
        nursery.cancel_scope.cancel()


def write_certificate(directory: Path) -> tuple[str, str, ssl.SSLContext]:
    cert_pem, key_pem = self_signed_pem("pooler test server")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return str(cert_path), str(key_path), ssl.create_default_context(cadata=cert_pem.decode())


async def test_tls_connections_are_read_through_the_ssl_stream(tmp_path: Path) -> None:
    cert_path, key_path, client_context = write_certificate(tmp_path)
    made = config(certfile=cert_path, keyfile=key_path)
    body = b"y" * 150_000
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, made)
        port = int(binds[0].rsplit(":", 1)[1])
        with trio.fail_after(DEADLINE):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1")
            head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
            for _ in range(2):
                await stream.send_all(head + body)
                received = b""
                while not received.endswith(b"\r\n\r\n150000"):
                    data = await stream.receive_some(65536)
                    assert data, received
                    received += data
                assert received.startswith(b"HTTP/1.1 200")
            await stream.aclose()
            while connection_tasks():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
