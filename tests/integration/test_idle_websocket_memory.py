"""What a held, idle websocket session keeps in the gateway (issue 17: ≤ 40 KiB per idle
session at 5,000 held; ops/bench/idle_memory.py --kind websocket measures all of it).

Once the client's socket is accepted, the session idles in two reads: the client's (in
Hypercorn's WSStream) and the upstream's (the session's upstream→client pump). Neither
side keeps what only the handshake needed, and the upstream read waits on its socket
without trio's `receive_some` layers."""

from __future__ import annotations

import gc
from pathlib import Path
from types import CoroutineType, SimpleNamespace
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio_websocket
from harness import open_stack, responses_body
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from test_websocket_responses import auth, turn, ws_url
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, TextMessage

from pooler.http_server.protocol import Http1Protocol
from pooler.lean_queues import LeanQueue, lean_channel, lean_events
from pooler.upstream.websocket import UpstreamWebsocket, _keep_alive
from pooler.upstream.ws_client import ClientWebsocket
from pooler.web.backend_codex.responses_ws import ResponsesWebsocketRoute


def live(kind: type) -> list[Any]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, kind)]


def suspended_in(code: Any) -> list[Any]:
    return [coro for coro in live(CoroutineType) if getattr(coro, "cr_code", None) is code]


async def idle_upstream_reader() -> Any:
    """The upstream read of the one held session, once its pump waits in it."""
    while not (readers := suspended_in(ClientWebsocket.get_message.__code__)):
        await trio.sleep(0.01)
    assert len(readers) == 1
    return readers[0]


async def test_a_held_idle_session_keeps_no_handshake_and_reads_the_socket_directly(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(20):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                assert ws.handshake_headers  # the upstream's 101 headers were relayed
                reader = await idle_upstream_reader()
                # The upstream read: `get_message` -> trio's wait_readable on the socket, not
                # SocketStream.receive_some and its layers.
                assert reader.cr_await.cr_code.co_name == "wait_readable"
                (upstream,) = live(ClientWebsocket)
                assert upstream.handshake_headers == []  # taken by the session, not kept
                assert type(upstream._protocol._events) is LeanQueue
                # Its keep-alive waits for the next ping in one cancel scope (no Event).
                (held,) = live(UpstreamWebsocket)
                assert isinstance(held._waiting, trio.CancelScope)
                assert not any(isinstance(getattr(held, n), trio.Event) for n in held.__slots__)
                # The session's frame keeps none of the upstream's headers either.
                (serving,) = suspended_in(ResponsesWebsocketRoute._serve.__code__)
                assert not {"handshake", "accept_headers"} & set(serving.cr_frame.f_locals)
                # It pumps the upstream's frames itself (no coroutine between it and the read).
                assert serving.cr_await.cr_code is ClientWebsocket.get_message.__code__
                # The client's side (the gateway's and the emulator's sockets: both are
                # served by pooler.http_server): no Handshake, no request head, no deque.
                accepted = [s for s in live(WSStream) if s.state == ASGIWebsocketState.CONNECTED]
                assert len(accepted) == 2
                for stream in accepted:
                    assert not isinstance(stream.handshake, Handshake)
                    assert stream.handshake.accepted
                    assert type(stream.connection._events) is LeanQueue
                    assert type(stream.app_put.__self__._state.data) is LeanQueue
                protocols = [p for p in live(Http1Protocol) if type(p.stream) is WSStream]
                assert len(protocols) == 2
                assert all(p.head is None for p in protocols)
                # And the session still works as before.
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"


def test_a_lean_event_queue_still_queues_the_close_of_a_lost_connection() -> None:
    connection = lean_events(Connection(ConnectionType.CLIENT))
    events_queue: Any = connection._events
    assert lean_events(connection) is connection and type(events_queue) is LeanQueue
    connection.receive_data(b"\x81\x02hi")
    connection.receive_data(None)  # the transport is gone: wsproto queues a close
    events = list(connection.events())
    assert [type(e) for e in events] == [CloseConnection, TextMessage]
    assert isinstance(events[0], CloseConnection) and events[0].code == 1006
    assert isinstance(events[1], TextMessage) and events[1].data == "hi"


async def test_a_lean_channel_keeps_its_order_and_its_bound() -> None:
    send, receive = trio.open_memory_channel[int](2)
    send.send_nowait(1)
    lean_channel(send.send)
    data: Any = send._state.data
    assert type(data) is LeanQueue and data == [1]
    send.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        send.send_nowait(3)
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]
    async with trio.open_nursery() as nursery:  # a receiver waiting is handed the value
        nursery.start_soon(send.send, 4)
        assert await receive.receive() == 4
    await receive.aclose()
    assert data == []


@pytest.mark.parametrize("interval", [1000.0, 0.0])
async def test_release_ends_the_keep_alive_wait_at_once(interval: float) -> None:
    connection: Any = SimpleNamespace(is_closed=False)
    socket = UpstreamWebsocket(connection)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_alive, socket, interval)
            while socket._waiting is None:
                await trio.lowlevel.checkpoint()
            socket.release()
    assert socket.released and socket._waiting is None
    with trio.fail_after(5):
        await _keep_alive(socket, interval)  # released before: returns at once
    # The keep-alive waits in itself, one frame (a held session keeps it suspended).
    socket = UpstreamWebsocket(connection)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep_alive, socket, interval)
        while socket._waiting is None:
            await trio.lowlevel.checkpoint()
        (keeping,) = suspended_in(_keep_alive.__code__)
        assert keeping.cr_await.cr_code is trio.sleep_forever.__code__
        socket.release()
