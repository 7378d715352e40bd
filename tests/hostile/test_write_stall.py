"""A client that stops reading its answer, without closing, is let go (DESIGN §8).

Hypercorn 0.18 wrote each response chunk in a shielded scope with no deadline, so a client
that opened an SSE stream or a websocket and stopped reading held its account's lease, its
admission slot and its upstream socket for as long as it kept the TCP connection open;
`pooler.write_stall` gives those writes a deadline (`write_stall_timeout_seconds`). The
clients here are raw sockets with a small receive buffer, so the gateway's writes block as
soon as they stop reading; the answers are several MiB, far more than the buffers hold.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import trio
from harness import QUIET_POLLS, Stack, open_stack, responses_body

SETTINGS = {**QUIET_POLLS, "write_stall_timeout_seconds": 1}
RECEIVE_BUFFER = 4096  # the kernel doubles it; the TCP window stays that small
BIG = 1024 * 1024  # the reply's text: the emulator sends it about five times over
STALLED_S = 10  # the gateway lets go within a second or two; the original never did


def reply_of(size: int) -> str:
    return "Reply with exactly: " + "x" * size


def body(path: str, size: int) -> bytes:
    """A streaming request, in the route's protocol, for a reply of `size` characters."""
    if path == "/v1/chat/completions":
        message = {"role": "user", "content": reply_of(size)}
        return json.dumps({"model": "gpt-5.5", "stream": True, "messages": [message]}).encode()
    return json.dumps(responses_body(reply_of(size))).encode()


async def connect(stack: Stack) -> trio.SocketStream:
    """A TCP connection to the gateway whose receive window stays small."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    await sock.connect(("127.0.0.1", int(stack.url.rsplit(":", 1)[1])))
    return trio.SocketStream(sock)


async def post_sse(stack: Stack, path: str, payload: bytes) -> tuple[trio.SocketStream, bytes]:
    """Send a streaming request and read the answer's head; the stream and what came with it."""
    stream = await connect(stack)
    await stream.send_all(
        f"POST {path} HTTP/1.1\r\nHost: pooler\r\nAuthorization: Bearer {stack.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return stream, await read_head(stream, b"HTTP/1.1 200 ")


async def open_websocket(stack: Stack, path: str) -> trio.SocketStream:
    stream = await connect(stack)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: pooler\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {stack.key}\r\n\r\n".encode()
    )
    await read_head(stream, b"HTTP/1.1 101 ")
    return stream


async def read_head(stream: trio.SocketStream, status: bytes) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(status), head[:200]
    return head


def text_frame(text: bytes) -> bytes:
    """A client's text frame with a 64-bit length and a zero mask (payload unchanged)."""
    return bytes([0x81, 0x80 | 127]) + len(text).to_bytes(8, "big") + b"\0\0\0\0" + text


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.02)


def leases(stack: Stack) -> int:
    return sum(h.snapshot.in_flight for h in stack.gateway.pool_supervisor.accounts.values())


def upstream_sockets(stack: Stack) -> int:
    """Upstream HTTP connections in use and upstream websockets open, over every account."""
    handles = stack.gateway.pool_supervisor.accounts.values()
    return sum(h.upstream.active_connections + len(h.actor._websockets) for h in handles)


def admitted(stack: Stack, route_class: str) -> int:
    return int(stack.gateway.admission.stats()[route_class].in_flight)


async def rows(stack: Stack, count: int = 1) -> list[tuple[str, int, str]]:
    await stack.wait_for_logs(count)
    found = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT transport, status_code, outcome FROM request_logs ORDER BY created_at"
        ).fetchall()
    )
    return [tuple(row) for row in found]


async def drain(stream: trio.SocketStream) -> bytes:
    """Everything the gateway sent before it closed (it closed: this ends)."""
    received = bytearray()
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass  # reset: also closed
    return bytes(received)


async def honest_stream(stack: Stack) -> None:
    async with stack.client() as client:
        answer = await client.post("/backend-api/codex/responses", json=responses_body())
    assert answer.status_code == 200, answer.text
    assert '"type":"response.completed"' in answer.text.replace(" ", "")


async def let_go(stack: Stack, route_class: str) -> None:
    """Wait until the stalled request has given back its lease, its slot and its upstream
    socket."""
    with trio.fail_after(STALLED_S):
        await until(
            lambda: (
                leases(stack) == 0
                and admitted(stack, route_class) == 0
                and upstream_sockets(stack) == 0
            )
        )


async def test_an_sse_client_that_stops_reading_is_let_go(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, instance_settings=SETTINGS) as stack:
        with trio.fail_after(60):
            for path in ("/backend-api/codex/responses", "/v1/chat/completions"):
                stream, _ = await post_sse(stack, path, body(path, BIG))
                async with stream:  # closed on the way out if the gateway never lets go
                    assert leases(stack) == 1 and admitted(stack, "stream") == 1
                    assert upstream_sockets(stack) == 1
                    await let_go(stack, "stream")  # never reading, never closing
                    received = await drain(stream)
                assert not received.endswith(b"0\r\n\r\n")  # cut off, not finished
            assert await rows(stack, 2) == [("http_sse", 499, "client_disconnected")] * 2
            await honest_stream(stack)


async def test_a_websocket_client_that_stops_reading_is_let_go(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, instance_settings=SETTINGS) as stack:
        with trio.fail_after(60):
            create = {"type": "response.create", **responses_body(reply_of(BIG))}
            async with await open_websocket(stack, "/backend-api/codex/responses") as stream:
                await stream.send_all(text_frame(json.dumps(create).encode()))
                with trio.fail_after(STALLED_S):
                    await until(lambda: leases(stack) == 1 and upstream_sockets(stack) == 1)
                await let_go(stack, "websocket")
                await drain(stream)
            transport, status, outcome = (await rows(stack))[0]
            assert (status, outcome) == (499, "client_disconnected"), transport
            await honest_stream(stack)


async def test_a_slow_reader_is_not_cut(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, instance_settings=SETTINGS) as stack:
        with trio.fail_after(60):
            path = "/backend-api/codex/responses"
            stream, received = await post_sse(stack, path, body(path, 16 * 1024))
            data = bytearray(received)
            async with stream:
                while not data.endswith(b"0\r\n\r\n"):
                    await trio.sleep(0.3)  # a slow link: its window at a time, deadline 1 s
                    chunk = await stream.receive_some(16 * 1024)
                    assert chunk, "the gateway closed a slow but reading client"
                    data += chunk
            assert b'"type":"response.completed"' in data
            assert await rows(stack) == [("http_sse", 200, "completed")]
