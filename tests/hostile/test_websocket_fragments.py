"""A websocket message past the size limit ends the connection, and costs no more memory
than the limit, however the client keeps sending (DESIGN §8).

Hypercorn 0.18 answered close 1009 but kept the socket and appended every later frame to
its message buffer; `pooler.serving.bound_websocket_messages` contains it. The client here
is a raw socket that streams without end: continuation fragments, or the payload of one
frame declaring a terabyte.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from harness import Stack, open_stack, responses_body
from hypercorn.config import Config

DEADLINE = 60
LIMIT = Config().websocket_max_message_size  # the gateway keeps Hypercorn's 16 MiB
CAP = 4 * LIMIT  # what the hostile client sends at most if the server never closes
MiB = 1024 * 1024
PATHS = ("/backend-api/codex/responses", "/v1/responses")
OP_CONTINUATION, OP_TEXT = 0x0, 0x1
CHUNK = b"a" * 65536


def frame_header(opcode: int, *, fin: bool, length: int) -> bytes:
    """A client frame's header with a 64-bit length and a zero mask (payload unchanged)."""
    first = (0x80 if fin else 0) | opcode
    return bytes([first, 0x80 | 127]) + length.to_bytes(8, "big") + b"\0\0\0\0"


async def open_raw_websocket(stack: Stack, path: str) -> trio.SocketStream:
    port = int(stack.url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: pooler\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {stack.key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return stream


async def stream_without_end(stream: trio.SocketStream, shape: str) -> tuple[int, bool]:
    """Send a message that never ends (up to CAP bytes) while watching for the server to
    close the connection; (bytes sent, whether the server closed it)."""
    closed = trio.Event()
    sent = 0

    async def watch() -> None:
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # reset: the server closed with our bytes still unread
        closed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            if shape == "one_frame":
                await stream.send_all(frame_header(OP_TEXT, fin=True, length=1 << 40))
            while sent < CAP and not closed.is_set():
                if shape == "fragments":
                    opcode = OP_TEXT if sent == 0 else OP_CONTINUATION
                    await stream.send_all(frame_header(opcode, fin=False, length=len(CHUNK)))
                await stream.send_all(CHUNK)
                sent += len(CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(10):  # bounded: the fixed server has closed long before
            await closed.wait()
        nursery.cancel_scope.cancel()
    await stream.aclose()
    return sent, closed.is_set()


@contextmanager
def traced_memory() -> Iterator[dict[str, int]]:
    """Python allocations in this process (the gateway runs in it) during the block:
    `peak` and `kept` (still allocated at the end), both relative to the start."""
    tracemalloc.start()
    figures: dict[str, int] = {}
    try:
        start = tracemalloc.get_traced_memory()[0]
        yield figures
        current, peak = tracemalloc.get_traced_memory()
        figures.update(peak=peak - start, kept=current - start)
    finally:
        tracemalloc.stop()


async def honest_turn(stack: Stack, path: str) -> list[dict[str, Any]]:
    url = stack.url.replace("http://", "ws://") + path
    headers = [(b"authorization", f"Bearer {stack.key}".encode())]
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
        await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "error"):
            events.append(json.loads(await ws.get_message()))
    return events


async def websockets_idle(stack: Stack) -> None:
    while stack.gateway.admission.stats()["websocket"].in_flight:
        await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("path", "shape"),
    [(PATHS[0], "fragments"), (PATHS[1], "fragments"), (PATHS[0], "one_frame")],
)
async def test_endless_message_closes_the_socket_within_the_limit(
    db_url: str, tmp_path: Path, path: str, shape: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            await honest_turn(stack, path)  # warm: first-use allocations are not counted
            await websockets_idle(stack)
            stream = await open_raw_websocket(stack, path)
            with traced_memory() as memory:
                sent, closed = await stream_without_end(stream, shape)
                await websockets_idle(stack)  # the gateway let go of the socket
            assert closed, f"the server kept the socket open after {sent / MiB:.0f} MiB"
            assert sent < CAP
            # Bounded by the limit (the message buffer) plus reads in flight, not by `sent`.
            assert memory["peak"] < LIMIT + 8 * MiB, memory
            assert memory["kept"] < 2 * MiB, memory

            # The next honest socket, on each route, still works.
            for honest_path in PATHS:
                events = await honest_turn(stack, honest_path)
                assert events[-1]["type"] == "response.completed", events[-1]
