"""The lean upstream websocket client against a wsproto server over an in-memory stream:
fragmented messages, control frames on the way, size limit, closes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from pooler.upstream.ws_client import ClientWebsocket, WebsocketClosed, _handshake


class Server:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.seen: list[object] = []

    async def accept(self) -> None:
        while True:
            self.ws.receive_data(await self.stream.receive_some(65536))
            for event in self.ws.events():
                if isinstance(event, Request):
                    headers = [(b"x-codex-turn-state", b"ts_1")]
                    await self.send(AcceptConnection(extra_headers=headers))
                    return

    async def send(self, event: object) -> None:
        await self.stream.send_all(self.ws.send(event))  # type: ignore[arg-type]

    async def read_events(self) -> list[object]:
        self.ws.receive_data(await self.stream.receive_some(65536))
        events = list(self.ws.events())
        self.seen += events
        return events


async def connected(max_message_size: int = 1024) -> tuple[ClientWebsocket, Server]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    request = Request(host="upstream", target="/backend-api/codex/responses")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept)
        client = await _handshake(client_stream, request, max_message_size)
    return client, server


async def test_fragments_join_and_control_frames_are_handled_on_the_way() -> None:
    client, server = await connected()
    assert (b"x-codex-turn-state", b"ts_1") in client.handshake_headers
    await server.send(Ping(b"p1"))
    await server.send(TextMessage('{"type":"resp', message_finished=False))
    await server.send(TextMessage('onse.created"}', message_finished=True))
    await server.send(BytesMessage(b"\x00\x01"))
    assert await client.get_message() == '{"type":"response.created"}'
    assert await client.get_message() == b"\x00\x01"
    events = await server.read_events()
    assert [type(e) for e in events] == [Pong] and events[0].payload == b"p1"  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:  # a ping waits for the pong the reader sees
        nursery.start_soon(client.ping)
        (ping,) = await server.read_events()
        assert isinstance(ping, Ping)
        await server.send(ping.response())
        with pytest.raises(WebsocketClosed):
            with trio.fail_after(1):
                await server.send(CloseConnection(1000))
                await client.get_message()
    assert client.is_closed and client.close_code == 1000
    (reply,) = await server.read_events()
    assert isinstance(reply, CloseConnection) and reply.code == 1000


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    client, server = await connected(max_message_size=8)
    await server.send(TextMessage("0123456789"))
    with pytest.raises(WebsocketClosed) as closed:
        await client.get_message()
    assert closed.value.code == 1009
    (close,) = await server.read_events()
    assert isinstance(close, CloseConnection) and close.code == 1009


async def test_a_dropped_connection_is_a_close_without_code() -> None:
    client, server = await connected()
    await server.stream.aclose()
    with pytest.raises(WebsocketClosed) as closed:
        await client.get_message()
    assert closed.value.code is None
    with pytest.raises(WebsocketClosed):
        await client.send_message("after the end")


async def test_close_from_our_side_sends_a_close_frame_and_ends_the_stream() -> None:
    client, server = await connected()
    await client.send_message('{"type":"response.create"}')
    await client.aclose()
    events = await server.read_events()
    assert isinstance(events[0], TextMessage)
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1000
    assert await server.stream.receive_some(10) == b""  # the TCP side is closed too
    await client.aclose()  # idempotent
