"""What a held SSE stream or websocket session keeps in the gateway (issue 17: memory per
idle stream or session; ops/bench/idle_memory.py measures all of it).

A Codex turn's body carries the whole conversation, and a stream may be held for minutes
while the model thinks. Once the stream's head is sent no attempt can follow, so the
relay keeps neither the body nor its parsed payload, nor the upstream answer's headers (its
outcome keeps the `x-` ones, packed), and its read waits on the upstream socket without
trio's `receive_some` layers. The task holding a session's upstream
websocket keeps neither the reply slot it answered through nor the target's headers, and
the upstream websocket keeps its connection, not its handshake."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from types import CoroutineType, FunctionType
from typing import Any

import trio
import trio_websocket
from harness import open_stack, responses_body
from hypercorn.protocol.http_stream import HTTPStream
from test_websocket_responses import auth, turn, ws_url
from wsproto import WSConnection

from pooler.upstream.http1 import UpstreamResponse
from pooler.upstream.websocket import hold_upstream_websocket
from pooler.upstream.ws_client import ClientWebsocket
from pooler.web import responses_relay
from pooler.web.quart_http import PulledBody
from pooler.web.responses_relay import ProxiedRequest, ResponsesRelay
from pooler.web.upstream_exchange import held_outcome_headers, outcome_headers

RESPONSES = "/backend-api/codex/responses"
MARKER = "held-stream-input-" + "x" * 4096


def live(kind: type) -> list[object]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, kind)]


def reading(function: Callable[..., object]) -> list[Any]:
    """The live coroutines running `function`."""
    code = function.__code__
    return [coro for coro in live(CoroutineType) if getattr(coro, "cr_code", None) is code]


def mentions_marker(value: object) -> bool:
    if isinstance(value, bytes | bytearray):
        return MARKER.encode() in value
    if isinstance(value, str):
        return MARKER in value
    return False


async def test_a_held_stream_keeps_neither_its_body_nor_its_payload(
    db_url: str, tmp_path: Path
) -> None:
    idle = {"x-emulator-delay-ms": "600000", "x-emulator-events": "1"}  # head, then nothing
    body = responses_body(MARKER, client_metadata=idle)
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(15):
            async with client.stream("POST", RESPONSES, json=body) as response:
                assert response.status_code == 200  # the head is out; the stream idles
                relayed = live(ProxiedRequest)
                assert len(relayed) == 1
                held = relayed[0]
                assert isinstance(held, ProxiedRequest)
                assert held.body == b"" and held.payload == {}
                assert not any(
                    mentions_marker(getattr(b, "_whole", None)) for b in live(PulledBody)
                )


async def test_a_held_stream_keeps_no_upstream_headers_and_waits_on_the_socket(
    db_url: str, tmp_path: Path
) -> None:
    idle = {"x-emulator-delay-ms": "600000", "x-emulator-events": "1"}  # head, then nothing
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(15):
            async with client.stream(
                "POST", RESPONSES, json=responses_body(client_metadata=idle)
            ) as response:
                assert response.status_code == 200
                assert response.headers["x-codex-turn-state"]  # relayed before they went
                while not (readers := reading(UpstreamResponse.__anext__)):  # the relay idles
                    await trio.sleep(0.01)
                held = live(UpstreamResponse)
                assert len(held) == 1
                upstream = held[0]
                assert isinstance(upstream, UpstreamResponse)
                assert upstream.status == 200
                assert upstream.headers == [] and upstream._p.headers == []
                # The relay keeps the `x-` headers for its outcome, packed, and not the
                # list of headers it sent.
                relays = reading(ResponsesRelay._relay_stream)
                assert len(relays) == 1
                kept = relays[0].cr_frame.f_locals
                assert "headers" not in kept
                # One chunk handler is made, the one this stream uses.
                assert sum(isinstance(value, FunctionType) for value in kept.values()) == 1
                assert isinstance(kept["kept"], bytes) and b"x-codex-turn-state" in kept["kept"]
                assert b"content-type" not in kept["kept"]
                # Nor does the server's stream keep the response head it sent.
                streams = [s for s in live(HTTPStream) if not s.closed]  # type: ignore[attr-defined]
                # (the gateway's and the emulator's: both are served by pooler.serving)
                assert len(streams) == 2
                for stream in streams:
                    assert stream.response["headers"] == []  # type: ignore[attr-defined]
                    assert stream.response["status"] == 200  # type: ignore[attr-defined]
                # The body's read is suspended in `__anext__` -> trio's wait_readable, not
                # in SocketStream.receive_some and its layers, nor in a coroutine of its own.
                assert len(readers) == 1
                read = readers[0].cr_await
                assert read.cr_code.co_name == "wait_readable"


async def test_a_stream_waiting_for_more_keeps_no_chunk_it_relayed(
    db_url: str, tmp_path: Path
) -> None:
    # Every event, then a pause before the end of the body: the relay waits with the last
    # event (`response.completed`, the whole response) relayed.
    ending = {"x-emulator-end-delay-ms": "600000"}
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(15):
            async with client.stream(
                "POST", RESPONSES, json=responses_body(client_metadata=ending)
            ) as response:
                completed = trio.Event()

                async def read_on() -> None:  # a client reading all it is sent
                    seen = b""
                    async for data in response.aiter_bytes():
                        seen += data
                        if b"response.completed" in seen:
                            completed.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_on)
                    await completed.wait()
                    while (
                        not (pumps := reading(responses_relay._pump))
                        or pumps[0].cr_await.cr_code is not UpstreamResponse.__anext__.__code__
                    ):
                        await trio.sleep(0.01)  # until the relay waits for the body's end
                    assert "chunk" not in pumps[0].cr_frame.f_locals
                    nursery.cancel_scope.cancel()


async def test_a_held_session_keeps_no_reply_slot_or_target(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(15):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
                holders = [
                    coro
                    for coro in live(CoroutineType)
                    if coro.cr_code is hold_upstream_websocket.__code__  # type: ignore[attr-defined]
                ]
                assert len(holders) == 1
                kept = set(holders[0].cr_frame.f_locals)  # type: ignore[attr-defined]
                assert "socket" in kept  # suspended while the session is held
                assert not kept & {"deliver", "fail", "target"}
                # The upstream websocket keeps no wsproto handshake (an h11 state and more).
                upstream = live(ClientWebsocket)
                assert len(upstream) == 1
                assert not any(isinstance(v, WSConnection) for v in vars(upstream[0]).values())


def test_the_headers_kept_for_an_outcome_are_the_x_ones_as_they_came() -> None:
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"x-codex-primary-used-percent", b"12.5"),
        (b"x-empty", b""),
        (b"X-Upper", b"a: b"),
    ]
    x_ones = ((b"x-codex-primary-used-percent", b"12.5"), (b"x-empty", b""), (b"X-Upper", b"a: b"))
    held = held_outcome_headers(headers)
    assert isinstance(held, bytes)
    assert outcome_headers(held) == x_ones
    assert outcome_headers(held_outcome_headers([])) == ()
    odd = [(b"x-odd", b"a\x00b")]  # llhttp refuses a NUL; kept unpacked all the same
    assert outcome_headers(held_outcome_headers(odd)) == tuple(odd)
