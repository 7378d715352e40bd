"""After a collected answer the relay reads the end of the upstream body (`_read_rest`,
pooler.web.responses_relay) under a deadline only when the end has not come yet (issue
17: that scope and read loop cost ~60 Python calls on a non-streamed request whose end
came with its terminal event). A real `UpstreamPool` against a socket that answers in one
write, or holds its end back; counted with cProfile, not timed."""

from __future__ import annotations

import cProfile
import pstats
from functools import partial

import trio

from pooler.upstream.http1 import UpstreamPool
from pooler.web.responses_relay import _read_rest

EVENT = b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
END = b"0\r\n\r\n"


async def answer(hold_end: trio.Event | None, stream: trio.SocketStream) -> None:
    async with stream:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
        if hold_end is None:
            await stream.send_all(HEAD + CHUNK + END)  # the end in the event's write
            await trio.sleep_forever()
        await stream.send_all(HEAD + CHUNK)
        await hold_end.wait()
        await stream.send_all(END)
        await trio.sleep_forever()


def callers_of(profile: cProfile.Profile, name: str, module: str) -> set[str]:
    found: set[str] = set()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (path, _, function), row in stats.items():
        if function == name and path.endswith(module):
            found |= {caller[2] for caller in row[4]}
    return found


async def rest_after_first_chunk(hold_end: trio.Event | None) -> tuple[cProfile.Profile, int]:
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, partial(answer, hold_end), 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{port}")
        with trio.fail_after(10):
            async with pool.request("POST", "/responses", [], b"{}") as response:
                first = await response.aiter_bytes().__anext__()
                assert first == EVENT
                if hold_end is not None:
                    nursery.start_soon(release_soon, hold_end)
                profile = cProfile.Profile()
                profile.enable()
                await _read_rest(response, 5.0)
                profile.disable()
        idle = pool.idle_connections
        await pool.aclose()
        nursery.cancel_scope.cancel()
    return profile, idle


async def release_soon(event: trio.Event) -> None:
    await trio.sleep(0.05)
    event.set()


async def test_an_end_already_read_is_not_waited_for() -> None:
    profile, idle = await rest_after_first_chunk(None)
    assert "_read_rest" not in callers_of(profile, "move_on_after", "trio/_timeouts.py")
    assert idle == 1  # the connection is kept for the next request


async def test_an_end_still_to_come_is_read_under_the_deadline() -> None:
    profile, idle = await rest_after_first_chunk(trio.Event())
    assert "_read_rest" in callers_of(profile, "move_on_after", "trio/_timeouts.py")
    assert idle == 1
