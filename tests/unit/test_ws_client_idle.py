"""What the upstream websocket client keeps between pings (issue 17: a held session keeps
nothing it no longer needs; ops/bench/idle_memory.py --kind websocket)."""

from __future__ import annotations

import trio
from test_ws_client import connected
from wsproto.events import Ping, TextMessage


async def test_an_answered_ping_leaves_no_pong_event_behind() -> None:
    client, server = await connected()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.ping)
            (ping,) = await server.read_events()
            assert isinstance(ping, Ping)
            await server.send(ping.response())
            await server.send(TextMessage("after the pong"))
            assert await client.get_message() == "after the pong"  # the reader saw the pong
    assert client._pong is None
