"""The write deadline itself, over a socket pair and over another stream (in memory), under
virtual time (the real stack's behaviour is in tests/hostile/test_write_stall.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.events import RawData
from hypercorn.trio import tcp_server
from hypercorn.trio.worker_context import WorkerContext

from pooler.serving import hypercorn_config
from pooler.write_stall import PIECE, WriteStall, send_within, stall_bounded_writes

DATA = b"x" * (3 * PIECE + 100)
BIG = b"x" * (4 * 1024 * 1024)  # far more than a socket pair's buffers hold


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """A TCP connection on loopback with small buffers: (the server's end, the client's)."""
    listener = trio.socket.socket()
    client = trio.socket.socket()
    for sock in (listener, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    async with trio.SocketStream(server) as sender, trio.SocketStream(client) as receiver:
        yield sender, receiver


async def test_a_socket_nobody_reads_misses_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with socket_pair() as (sender, _receiver):
        start = trio.current_time()
        assert not await send_within(sender, BIG, 5.0)
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_a_socket_read_slowly_keeps_the_write_going(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = b"x" * (256 * 1024)
    async with socket_pair() as (sender, receiver):
        received = bytearray()

        async def read_slowly() -> None:
            while len(received) < len(data):
                await trio.sleep(1.0)  # a minute in all, for a deadline of 5 s
                received.extend(await receiver.receive_some(4096))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            with trio.CancelScope() as scope:
                scope.cancel()  # shielded, as Hypercorn's writes are
                assert await send_within(sender, data, 5.0)
        assert bytes(received) == data


async def test_a_socket_write_after_a_reset_is_broken() -> None:
    async with socket_pair() as (sender, receiver):
        await receiver.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await send_within(sender, BIG, 5.0)
        await sender.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await send_within(sender, b"x", 5.0)
        with pytest.raises(trio.ClosedResourceError):
            await send_within(sender, b"", 5.0)  # nothing to send, still closed


async def test_a_write_nobody_takes_misses_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sender, _receiver = trio.testing.lockstep_stream_pair()
    start = trio.current_time()
    assert not await send_within(sender, DATA, 5.0)
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_a_slow_reader_keeps_the_write_going(autojump_clock: trio.testing.MockClock) -> None:
    sender, receiver = trio.testing.lockstep_stream_pair()
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < len(DATA):
            await trio.sleep(1.0)
            received.extend(await receiver.receive_some(PIECE // 4))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        # The whole write takes far longer than the deadline; each piece does not.
        assert await send_within(sender, DATA, 5.0)
    assert bytes(received) == DATA


async def test_the_write_is_shielded_from_its_callers_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sender, receiver = trio.testing.lockstep_stream_pair()
    received = bytearray()

    async def read() -> None:
        while len(received) < len(DATA):
            await trio.sleep(0.5)
            received.extend(await receiver.receive_some(PIECE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        with trio.CancelScope() as scope:
            scope.cancel()  # as Hypercorn's: a chunk is never half sent because of the app
            assert await send_within(sender, DATA, 5.0)
    assert bytes(received) == DATA


def test_the_server_config_installs_the_deadline_with_its_owners_holder() -> None:
    stall = WriteStall(7.0)
    config = hypercorn_config("127.0.0.1", 0, write_stall=stall)
    assert config.write_stall is stall
    assert hypercorn_config("127.0.0.1", 0).write_stall.seconds == 60.0
    installed = tcp_server.TCPServer.protocol_send
    assert getattr(installed, "_stall_bounded", False)
    stall_bounded_writes()  # idempotent
    assert tcp_server.TCPServer.protocol_send is installed


def test_it_refuses_to_start_when_hypercorn_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    async def moved(self: Any, event: Any) -> None:
        await self.transport.write(event)

    monkeypatch.setattr(tcp_server.TCPServer, "protocol_send", moved)
    with pytest.raises(RuntimeError, match="Hypercorn or trio changed"):
        stall_bounded_writes()


class Protocol:
    """What Hypercorn's server tells its protocol (only `Closed()` matters here)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def handle(self, event: Any) -> None:
        self.events.append(type(event).__name__)


def server_on(stream: Any, stall_s: float = 5.0) -> Any:
    """Hypercorn's TCPServer writing to `stream`, as the gateway's config installs it."""
    config = hypercorn_config("127.0.0.1", 0, write_stall=WriteStall(stall_s))
    nothing: Any = None  # the application and its state: never used here
    server = tcp_server.TCPServer(nothing, config, WorkerContext(None), nothing, stream)
    server.protocol = Protocol()  # type: ignore[assignment]
    return server


async def test_small_writes_to_a_client_that_stops_reading_end_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each write goes straight to the socket while it has room; the one it has no room for
    # waits, under the deadline.
    async with socket_pair() as (sender, _receiver):
        server = server_on(sender)
        writes = 0
        with trio.fail_after(60):
            while not server.protocol.events:
                start = trio.current_time()
                await server.protocol_send(RawData(data=b"x" * 1024))
                writes += 1
        assert server.protocol.events == ["Closed"] and writes > 1
        assert trio.current_time() - start == pytest.approx(5.0)
        with pytest.raises(trio.ClosedResourceError):
            await sender.send_all(b"x")  # the stream was closed


async def test_a_write_to_a_reset_client_tells_the_protocol() -> None:
    async with socket_pair() as (sender, receiver):
        server = server_on(sender)
        await receiver.aclose()
        with trio.fail_after(10):
            while not server.protocol.events:
                await server.protocol_send(RawData(data=b"x" * 1024))
        assert server.protocol.events[0] == "Closed"


async def test_a_cancelled_writer_sends_nothing_and_a_write_is_a_checkpoint() -> None:
    async with socket_pair() as (sender, receiver):
        server = server_on(sender)
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.protocol_send(RawData(data=b"never"))
        assert scope.cancelled_caught
        with trio.testing.assert_checkpoints():  # may be cancelled, lets others run
            await server.protocol_send(RawData(data=b"after"))
        with trio.fail_after(10):
            assert await receiver.receive_some(100) == b"after"


async def test_concurrent_writers_take_turns() -> None:
    async with socket_pair() as (sender, receiver):
        server = server_on(sender)
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(BIG) + 6:
                received.extend(await receiver.receive_some(65536))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.protocol_send, RawData(data=BIG))
                await trio.testing.wait_all_tasks_blocked()  # the big write holds the lock
                nursery.start_soon(server.protocol_send, RawData(data=b"marker"))
                nursery.start_soon(read_all)
        assert bytes(received) == BIG + b"marker" and not server.protocol.events
