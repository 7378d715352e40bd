"""Memory after hostile input, repeated (DESIGN §8): each hostile case many times over, then
what is still alive compared with before.

- The upstream HTTP/1.1 client (pooler.upstream.http1) against an origin that writes
  scripted raw bytes: junk, a head over 64 KiB, endless trailers, Transfer-Encoding with
  Content-Length, bytes after a response, huge chunk sizes, a head dripped and cut off by
  the caller's deadline. One pool takes every round.
- The gateway (the real stack) on such an origin: every round fails over across the three
  accounts and answers an OpenAI-shaped 502.
- The gateway with clients that leave mid-stream: a close, a reset (SO_LINGER 0), a
  pipelined second request then a close; and keep-alive clients that close between
  requests (pooler.closed_connections). Hypercorn alone for the pipelined case, which
  used to keep each such connection for good.

Each round's answer is checked (the upstream client's error, which the gateway answers as
an OpenAI-shaped 502; a 499 log row for a client that left, and the upstream given back).
Rounds in which trio or the gateway keep something by design (trio's deadline heap, the
response-id pins) are named below. Then, with garbage
collected: no class of ours or of the server's stack has gained objects in proportion to
the rounds (a per-round leak of even one object fails; noise is a few), and neither the
trio tasks nor the process's file descriptors have grown. The upstream client's rounds
also run under tracemalloc. The next honest request succeeds. Figures are printed (-s).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import socket
import struct
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
from harness import QUIET_POLLS, Stack, open_stack, responses_body, seed_stack
from harness import test_config as stack_config  # not a test (pytest collects test_*)
from http1_support import connection_tasks
from hypercorn.trio import serve
from test_http1_client_parsing import OK_HEAD, RawOrigin, fixed, raw_origin

from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState
from pooler.server import run_gateway
from pooler.serving import hypercorn_config, serve_lifespan
from pooler.upstream.errors import UpstreamProtocolError, UpstreamReadError
from pooler.upstream.http1 import UpstreamPool

ROUNDS = 300  # the upstream client's rounds per case
STACK_ROUNDS = 200  # the gateway's rounds per case (each a real streamed request)
WARM_UP = 20
HAPPY_EYEBALLS_S = 0.25  # trio.open_tcp_stream's default delay
# Modules whose classes are counted: a leak of the request path holds one of these.
OWN_MODULES = ("pooler", "hypercorn", "quart", "trio", "h11", "httptools", "werkzeug")
CODEX = "/backend-api/codex/responses"
# Kept per round by design: each response id is pinned to its account so a follow-up
# with `previous_response_id` finds it (pooler.routing.continuity, bounded: 100,000
# entries, an hour each).
DESIGNED = frozenset({"pooler.routing.continuity.Pin"})
# Trio keeps an exited cancel scope that had a deadline (a request's first-byte and idle
# deadlines) in its deadline heap until that deadline passes or the heap is pruned (at
# 1,000 stale entries): bounded by trio. A request left behind shows in its task,
# nursery and stream objects, which are counted.
DEADLINE_HEAP = frozenset({"trio.CancelScope", "trio._core._run.CancelReason"})


@dataclass
class Census:
    """What is alive, garbage collected first."""

    classes: Counter[str]
    objects: int
    tasks: int
    fds: int
    traced: int  # bytes allocated under tracemalloc (0 when it is off)
    deadlines: int  # entries in trio's deadline heap, stale ones included (a figure only)

    @classmethod
    async def take(cls) -> Census:
        # Each connect (trio.open_tcp_stream) leaves its happy-eyeballs cancel scope in
        # trio's deadline heap until that deadline passes: let the last ones expire.
        await trio.sleep(HAPPY_EYEBALLS_S + 0.1)
        gc.collect()
        objects = gc.get_objects()
        classes: Counter[str] = Counter()
        for obj in objects:
            kind = type(obj)
            module = kind.__dict__.get("__module__")
            if isinstance(module, str) and module.startswith(OWN_MODULES):
                classes[f"{module}.{kind.__qualname__}"] += 1
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        return cls(
            classes,
            len(objects),
            trio.lowlevel.current_statistics().tasks_living,
            len(os.listdir("/proc/self/fd")),
            traced,
            deadline_heap_size(),
        )

    def grown_since(self, before: Census) -> dict[str, int]:
        return {
            name: count - before.classes[name]
            for name, count in self.classes.items()
            if count > before.classes[name]
        }


def deadline_heap_size() -> int:
    """For the report only (trio's internals): -1 if trio moved it."""
    runner = getattr(trio._core._run.GLOBAL_RUN_CONTEXT, "runner", None)
    return len(getattr(getattr(runner, "deadlines", None), "_heap", None) or []) if runner else -1


def assert_returned(label: str, before: Census, after: Census, rounds: int) -> None:
    """No per-round leftover: no class gained rounds/4 objects or more, the trio tasks and
    file descriptors are back, and (under tracemalloc) fewer than 128 bytes per round are
    still held. A leak of one object per round gains `rounds`; noise is a handful."""
    grown = {
        name: n
        for name, n in after.grown_since(before).items()
        if name not in DESIGNED | DEADLINE_HEAP
    }
    top = sorted(grown.items(), key=lambda item: -item[1])[:5]
    print(
        f"\n{label}: {rounds} rounds; objects {after.objects - before.objects:+d}, "
        f"tasks {after.tasks - before.tasks:+d}, fds {after.fds - before.fds:+d}, "
        f"traced {after.traced - before.traced:+d} B, trio deadline heap "
        f"{after.deadlines - before.deadlines:+d}; classes grown: {top}"
    )
    assert not [item for item in grown.items() if item[1] >= rounds // 4], top
    assert after.tasks <= before.tasks + 2
    assert after.fds <= before.fds + 2
    if after.traced:
        assert after.traced - before.traced < 128 * rounds


# --- the upstream client, against a raw origin ------------------------------------------

Script = Callable[[trio.SocketStream, int, int], Awaitable[bool]]
Check = Callable[[UpstreamPool], Awaitable[None]]


def once(response: bytes, keep: bool = True) -> Script:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(response)
        return keep

    return script


def endless(start: bytes) -> Script:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(start)
        while True:  # until the client hangs up
            await stream.send_all(b"a" * 4096)

    return script


def refused(error: type[Exception]) -> Check:
    async def check(pool: UpstreamPool) -> None:
        with pytest.raises(error):
            async with pool.request("GET", "/", []) as resp:
                await resp.read()

    return check


async def first_only(pool: UpstreamPool) -> None:
    async with pool.request("GET", "/", []) as resp:
        assert (resp.status, await resp.read()) == (200, b"first")


class Drip:
    """The head comes a few bytes at a time; the caller's deadline (a cancel scope, as
    the relay's first-byte deadline) ends the request mid-head."""

    def __init__(self) -> None:
        self.caller: trio.CancelScope | None = None

    async def script(self, stream: trio.SocketStream, connection: int, request: int) -> bool:
        head = OK_HEAD + b"x-slow: " + b"d" * 200
        for i in range(0, len(head), 8):
            await stream.send_all(head[i : i + 8])
            await trio.lowlevel.checkpoint()
        assert self.caller is not None
        self.caller.cancel()
        while await stream.receive_some(65536):  # until the client hangs up
            pass
        return False

    async def check(self, pool: UpstreamPool) -> None:
        with trio.CancelScope() as self.caller:
            async with pool.request("GET", "/", []) as resp:
                await resp.read()
        assert self.caller.cancelled_caught


def upstream_cases() -> list[tuple[str, Script, Check]]:
    chunked = OK_HEAD + b"transfer-encoding: chunked\r\n\r\n"
    big_head = OK_HEAD + (b"x-filler: " + b"a" * 1000 + b"\r\n") * 70 + b"content-length: 0\r\n\r\n"
    drip = Drip()
    return [
        ("junk", once(b"SSH-2.0-OpenSSH_9.6\r\n" + os.urandom(64)), refused(UpstreamProtocolError)),
        ("head over 64 KiB", once(big_head), refused(UpstreamProtocolError)),
        ("endless head", endless(OK_HEAD + b"x-endless: "), refused(UpstreamProtocolError)),
        ("endless trailers", endless(chunked + b"0\r\nx-t: "), refused(UpstreamProtocolError)),
        (
            "TE and CL",
            once(OK_HEAD + b"transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\nabc\r\n"),
            refused(UpstreamProtocolError),
        ),
        ("bytes after a response", once(fixed(b"first") + fixed(b"unasked")), first_only),
        (
            "chunk size overflow",
            once(chunked + b"f" * 40 + b"\r\nab"),
            refused(UpstreamProtocolError),
        ),
        (
            "huge chunk then close",
            once(chunked + b"7fffffffffffffff\r\n" + b"z" * 5000, keep=False),
            refused(UpstreamReadError),
        ),
        ("slow drip cut by the caller", drip.script, drip.check),
    ]


@pytest.mark.parametrize("case", upstream_cases(), ids=lambda case: case[0])
async def test_the_upstream_client_returns_its_memory_after_hostile_responses(
    case: tuple[str, Script, Check],
) -> None:
    label, script, check = case
    tracemalloc.start()
    try:
        with trio.fail_after(120):
            async with raw_origin(script) as (server, pool):

                async def rounds(count: int) -> None:
                    for _ in range(count):
                        await check(pool)
                        assert pool.active_connections == 0 and pool.idle_connections == 0
                        server.requests.clear()  # the test origin's own record

                await rounds(WARM_UP)
                before = await Census.take()
                await rounds(ROUNDS)
                after = await Census.take()
                server.script = once(fixed(b"honest"))
                async with pool.request("GET", "/", []) as resp:
                    assert (resp.status, await resp.read()) == (200, b"honest")
    finally:
        tracemalloc.stop()
    assert_returned(f"upstream client, {label}", before, after, ROUNDS)


# --- the gateway, with clients that leave or close -------------------------------------


def port_of(stack: Stack) -> int:
    return int(stack.url.rsplit(":", 1)[1])


def request_bytes(stack: Stack, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"POST {CODEX} HTTP/1.1\r\nHost: pooler\r\nAuthorization: Bearer {stack.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def slow_stream(stack: Stack) -> bytes:
    # 40 deltas 20 ms apart: the client leaves after the first, long before the end.
    knobs = {"x-emulator-delay-ms": "20", "x-emulator-events": "40"}
    return request_bytes(stack, responses_body(client_metadata=knobs))


def held(stack: Stack) -> tuple[int, int]:
    """Leases held and upstream connections in use, over every account."""
    handles = stack.gateway.pool_supervisor.accounts.values()
    return (
        sum(h.snapshot.in_flight for h in handles),
        sum(h.upstream.active_connections for h in handles),
    )


async def let_go(stack: Stack) -> None:
    """The upstream request is cut and the lease given back (bounded: a stream would run
    on for 0.8 s, the idle deadline far longer)."""
    with trio.fail_after(10):
        while held(stack) != (0, 0):
            await trio.sleep(0.005)


async def read_until(stream: trio.SocketStream, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        chunk = await stream.receive_some(65536)
        assert chunk, seen[-300:]
        seen += chunk
    return seen


async def leave_mid_stream(stack: Stack, how: str) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(stack))
    try:
        first = slow_stream(stack)
        await stream.send_all(
            first + request_bytes(stack, responses_body()) if how == "pipelined" else first
        )
        seen = await read_until(stream, b"response.output_text.delta")
        assert seen.startswith(b"HTTP/1.1 200 ")
        if how == "reset":
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        await stream.aclose()
    await let_go(stack)


async def close_between_requests(stack: Stack) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(stack))
    async with stream:
        await stream.send_all(request_bytes(stack, responses_body()))
        seen = await read_until(stream, b"\r\n0\r\n\r\n")  # the whole answer
        assert seen.startswith(b"HTTP/1.1 200 ") and b'"response.completed"' in seen
    await let_go(stack)


async def outcomes(stack: Stack) -> Counter[tuple[int, str]]:
    found = await stack.database.run(
        lambda conn: conn.execute("SELECT status_code, outcome FROM request_logs").fetchall()
    )
    return Counter((status, outcome) for status, outcome in found)


def server_connections(stack: Stack) -> int:
    """The gateway's connections still alive in Hypercorn (each holds its protocol, parser
    and buffers); the emulator's are its own."""
    from hypercorn.trio.tcp_server import TCPServer

    port = port_of(stack)
    return sum(
        type(obj) is TCPServer and obj.stream.socket.getsockname()[1] == port
        for obj in gc.get_objects()
    )


@pytest.mark.parametrize("how", ["close", "reset", "pipelined", "keep-alive close"])
async def test_the_gateway_returns_its_memory_after_clients_that_leave(
    db_url: str, tmp_path: Path, how: str
) -> None:
    async def one(stack: Stack) -> None:
        if how == "keep-alive close":
            await close_between_requests(stack)
        else:
            await leave_mid_stream(stack, how)

    # No quota used per request: hundreds of rounds must not meet usage limits.
    async with open_stack(db_url, tmp_path, percent_per_request=0.0) as stack:
        with trio.fail_after(240):
            for _ in range(WARM_UP):
                await one(stack)
            logged = await stack.wait_for_logs(WARM_UP)
            stack.emulator.requests.clear()  # the emulator's own record (same process)
            before = await Census.take()
            for _ in range(STACK_ROUNDS):
                await one(stack)
            logged = await stack.wait_for_logs(logged + STACK_ROUNDS)
            stack.emulator.requests.clear()
            after = await Census.take()
            left_open = server_connections(stack)
            async with stack.client() as client:
                honest = await client.post(CODEX, json=responses_body())
            found = await outcomes(stack)
    assert honest.status_code == 200 and '"response.completed"' in honest.text
    expected = (200, "completed") if how == "keep-alive close" else (499, "client_disconnected")
    # Every round logged as what it was (a pipelined request behind one that left is
    # never started: its client is gone).
    assert found[expected] == WARM_UP + STACK_ROUNDS, found
    assert_returned(f"gateway, {how}", before, after, STACK_ROUNDS)
    assert left_open == 0  # no connection waits for its keep-alive deadline


# --- Hypercorn alone: a pipelined request behind an answer whose client left ------------


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """Streams until its client leaves, then stops without ending the answer (as the
    gateway's relay does when it is cancelled)."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(2000):
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await trio.sleep(0.005)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.mark.parametrize("reset", [False, True])
async def test_a_pipelined_request_behind_a_client_that_left_does_not_keep_the_connection(
    reset: bool,
) -> None:
    # The server's read loop waits on a pipelined request until the answer before it
    # completes; a client that leaves during that answer used to leave the connection
    # (task, socket, protocol) for good (Hypercorn's H11Protocol; pooler.http_server).
    config = hypercorn_config("127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, streaming_app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        fds_before = len(os.listdir("/proc/self/fd"))
        with trio.fail_after(10):
            for _ in range(3):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                try:
                    await stream.send_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n" * 2)
                    await read_until(stream, b"xxxx")  # the first answer is under way
                    if reset:
                        linger = struct.pack("ii", 1, 0)
                        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                finally:
                    await stream.aclose()
            while connection_tasks():  # bounded by fail_after, not keep-alive (75 s)
                await trio.sleep(0.01)
        assert len(os.listdir("/proc/self/fd")) <= fds_before  # their sockets are closed
        nursery.cancel_scope.cancel()


# --- the gateway, with an upstream that answers hostile bytes ---------------------------


@asynccontextmanager
async def stack_on_raw_origin(
    db_url: str, data_dir: Path, origin: RawOrigin
) -> AsyncIterator[Stack]:
    """The harness's stack, but its Responses upstream is `origin` (the emulator still
    serves sign-in and tokens)."""
    state = EmulatorState(accounts=3, percent_per_request=0.0)
    database = Database.open(db_url, max_size=8)
    try:
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(
                partial(trio.serve_tcp, origin.handle, 0, host="127.0.0.1")
            )
            origin.port = listener.socket.getsockname()[1]
            port = await nursery.start(serve_emulator, state)
            emulator_url = f"http://127.0.0.1:{port}"
            config = stack_config(data_dir, db_url, emulator_url)
            config = dataclasses.replace(
                config, upstream_base_url=f"http://127.0.0.1:{origin.port}"
            )
            # Every round reaches the upstream: no circuit opens on its failures.
            settings = {**QUIET_POLLS, "circuit_failure_threshold": 1000}
            key = await seed_stack(database, config, state, settings)
            running = await nursery.start(partial(run_gateway, config, database, "127.0.0.1", 0))
            yield Stack(config, database, state, emulator_url, running, key)
            nursery.cancel_scope.cancel()
    finally:
        database.close()


def honest_stream() -> bytes:
    response = {"id": "resp_honest", "object": "response", "status": "completed", "output": []}
    events = [
        ("response.created", {**response, "status": "in_progress"}),
        ("response.completed", response),
    ]
    body = b"".join(
        b"event: %s\ndata: %s\n\n"
        % (kind.encode(), json.dumps({"type": kind, "response": r}).encode())
        for kind, r in events
    )
    return fixed(body, b"content-type: text/event-stream\r\n")


HOSTILE_ORIGIN = {
    "junk": once(b"SSH-2.0-OpenSSH_9.6\r\n", keep=False),
    "head over 64 KiB": once(
        OK_HEAD + (b"x-filler: " + b"a" * 1000 + b"\r\n") * 70 + b"content-length: 0\r\n\r\n"
    ),
    "endless trailers": endless(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n0\r\nx-t: "),
    "huge chunk then close": once(
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n7fffffffffffffff\r\n" + b"z" * 5000,
        keep=False,
    ),
}


@pytest.mark.parametrize("label", list(HOSTILE_ORIGIN))
async def test_the_gateway_returns_its_memory_after_hostile_upstream_answers(
    db_url: str, tmp_path: Path, label: str
) -> None:
    origin = RawOrigin(HOSTILE_ORIGIN[label])
    answers: Counter[tuple[int, str]] = Counter()

    async def one(client: httpx.AsyncClient) -> None:
        origin.requests.clear()  # the test origin's own record
        answer = await client.post(CODEX, json=responses_body(stream=False))
        error = answer.json()["error"]
        assert set(error) >= {"message", "type", "code", "param"}, answer.text
        answers[answer.status_code, error["code"]] += 1

    async with stack_on_raw_origin(db_url, tmp_path, origin) as stack:
        with trio.fail_after(240):
            async with stack.client() as client:
                for _ in range(WARM_UP):
                    await one(client)
                await stack.wait_for_logs(WARM_UP)
                before = await Census.take()
                for _ in range(STACK_ROUNDS):
                    await one(client)
                await stack.wait_for_logs(WARM_UP + STACK_ROUNDS)
                after = await Census.take()
                origin.script = once(honest_stream())
                honest = await client.post(CODEX, json=responses_body())
    assert honest.status_code == 200 and '"response.completed"' in honest.text
    assert origin.connections >= 3 * (WARM_UP + STACK_ROUNDS)  # each account tried, each round
    print(f"\ngateway on a hostile upstream, {label}: answers {dict(answers)}")
    assert all(status in (502, 503) for status, _ in answers)
    assert_returned(f"gateway on a hostile upstream, {label}", before, after, STACK_ROUNDS)
