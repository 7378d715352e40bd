"""Turns of the event loop the upstream client takes on the way to an answer's first byte
(issue 17: SSE time to first byte). Each time the requesting task is rescheduled is a turn
of the loop (an epoll_wait(2), other tasks' steps, the GIL let go) before the gateway can
write its client's first byte. Counted with a trio Instrument, so nothing here depends on
timing; the origin is a plain socket on loopback in the same loop."""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
from turn_counts import counting_reschedules

from pooler.upstream.http1 import UpstreamPool, UpstreamResponse

DEADLINE = 10


class Origin:
    """Answers each request with a chunked SSE head; its first event goes when `release`
    is set (or at once when `together`), the end of the body right after."""

    def __init__(self) -> None:
        self.port = 0
        self.release = trio.Event()
        self.sent = trio.Event()
        self.together = False

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                buffer = buffer[length:]
                start = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                event = b"data: {}\n\n"
                first = b"%x\r\n%s\r\n" % (len(event), event)
                if self.together:
                    await stream.send_all(start + first + b"0\r\n\r\n")
                    continue
                await stream.send_all(start)
                await self.release.wait()
                await stream.send_all(first)
                self.sent.set()
                await stream.send_all(b"0\r\n\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Origin, UpstreamPool]]:
    origin = Origin()
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, origin.handle, 0, host="127.0.0.1")
        )
        origin.port = listener.socket.getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{origin.port}")
        try:
            yield origin, pool
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


async def event_in_socket(origin: Origin, response: UpstreamResponse) -> None:
    """Let the origin send its first event and wait until it is in `response`'s socket's
    receive queue, not yet read (a bounded wait, no turn of the loop)."""
    origin.release.set()
    await origin.sent.wait()
    raw = response._conn.plain
    assert raw is not None
    assert select.select([raw], [], [], DEADLINE)[0]


async def test_a_request_on_a_kept_connection_waits_only_for_the_response_head() -> None:
    """The slot and the request's write take no turn of the loop: the task is rescheduled
    once, by the head's arrival (before: three times, a yield after the slot and another
    after the write, each before the upstream could even answer)."""
    with trio.fail_after(DEADLINE):
        async with serving() as (origin, pool):
            origin.together = True
            async with pool.request("POST", "/responses", [], b"{}") as response:
                await response.read()  # a connection to keep
            assert pool.idle_connections == 1
            context = pool.request("POST", "/responses", [], b"{}")
            with counting_reschedules() as turns:
                response = await context.__aenter__()
            try:
                assert response.status == 200
                assert turns.count == 1
                assert await response.read() == b"data: {}\n\n"
            finally:
                await context.__aexit__(None, None, None)
            assert pool.idle_connections == 1  # still kept


async def test_a_first_event_already_received_is_taken_without_a_turn() -> None:
    """The first body read after the head takes what the socket already holds at once
    (before: it waited for the socket to be reported readable, an epoll_ctl(2) and a turn
    of the loop, though the event was there)."""
    with trio.fail_after(DEADLINE):
        async with (
            serving() as (origin, pool),
            pool.request("POST", "/responses", [], b"{}") as response,
        ):
            await event_in_socket(origin, response)
            with counting_reschedules() as turns:
                first = await response.__anext__()
            assert first == b"data: {}\n\n"
            assert turns.count == 0
            assert [chunk async for chunk in response] == []


class CountingSocket:
    """A plain socket's stand-in for `_Connection.plain` that counts recv(2)s that found
    nothing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.empty_reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv(self, size: int) -> bytes:
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            self.empty_reads += 1
            raise


async def test_the_response_head_is_waited_for_without_a_recv_that_finds_nothing() -> None:
    """The head is read right after the request went, before the upstream can have
    answered: the socket is waited for first (before: a recv(2) was tried first and failed,
    a system call that lets the GIL go, on every request)."""
    with trio.fail_after(DEADLINE):
        async with serving() as (origin, pool):
            origin.together = True
            async with pool.request("POST", "/responses", [], b"{}") as response:
                await response.read()
            (conn,) = pool._idle
            assert conn.plain is not None
            counting_socket = CountingSocket(conn.plain)
            conn.plain = counting_socket  # type: ignore[assignment]
            async with pool.request("POST", "/responses", [], b"{}") as response:
                assert counting_socket.empty_reads == 0
                assert await response.read() == b"data: {}\n\n"


async def test_the_request_still_goes_whole_when_the_socket_takes_part_of_it() -> None:
    """A request bigger than the socket takes at once is finished by the stream's own
    writes (the first send(2) is only a shortcut)."""
    with trio.fail_after(DEADLINE):
        async with serving() as (origin, pool):
            origin.together = True
            async with pool.request("POST", "/responses", [], b"{}") as response:
                await response.read()
            (conn,) = pool._idle
            raw = conn.plain
            assert raw is not None
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            body = b'{"x":"' + b"y" * 60_000 + b'"}'
            async with pool.request("POST", "/responses", [], body) as response:
                assert await response.read() == b"data: {}\n\n"
