"""The hot-path HTTP/1.1 client's response parsing (httptools/llhttp) against an origin that
writes scripted raw bytes on a real loopback socket: heads split anywhere, chunk
extensions and trailers, bodies framed by EOF, keep-alive decisions, bounds and errors."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from pooler.upstream.errors import UpstreamProtocolError, UpstreamReadError
from pooler.upstream.http1 import UpstreamPool

DEADLINE = 10  # seconds; every test that waits on a socket runs under it

# (stream, connection index, request index) -> keep reading requests on this connection?
Script = Callable[[trio.SocketStream, int, int], Awaitable[bool]]

OK_HEAD = b"HTTP/1.1 200 OK\r\n"


class RawOrigin:
    """Reads each request (head plus Content-Length body) and lets `script` answer it with
    whatever bytes it likes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []  # raw, as received

    async def handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                if not await self.script(stream, index, len(self.requests) - 1):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def raw_origin(script: Script) -> AsyncIterator[tuple[RawOrigin, UpstreamPool]]:
    server = RawOrigin(script)
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        server.port = listener.socket.getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{server.port}")
        try:
            yield server, pool
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


def answers(*responses: bytes, keep: bool = True) -> Script:
    """Answer request i with responses[i] (the last one for any later request), in one write."""

    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(responses[min(request, len(responses) - 1)])
        return keep

    return script


def fixed(body: bytes, *headers: bytes) -> bytes:
    return OK_HEAD + b"".join(headers) + b"content-length: %d\r\n\r\n" % len(body) + body


async def get(pool: UpstreamPool, method: str = "GET") -> tuple[int, bytes]:
    async with pool.request(method, "/", []) as resp:
        return resp.status, await resp.read()


async def test_head_and_body_split_byte_by_byte() -> None:
    response = (
        b"HTTP/1.1 201 Created\r\nX-Long-Name:  padded value \t\r\nTransfer-Encoding: chunked"
        b"\r\nX-After: 1\r\n\r\n4\r\nwiki\r\n6\r\npedia \r\n0\r\n\r\n"
    )

    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        for i in range(len(response)):
            await stream.send_all(response[i : i + 1])
            await trio.sleep(0.001)  # each byte its own segment (TCP_NODELAY is on)
        return True

    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (server, pool):
            for _ in range(2):
                async with pool.request("GET", "/", []) as resp:
                    assert resp.status == 201
                    assert resp.headers == [
                        (b"x-long-name", b"padded value"),
                        (b"transfer-encoding", b"chunked"),
                        (b"x-after", b"1"),
                    ]
                    assert await resp.read() == b"wikipedia "
            assert server.connections == 1 and pool.idle_connections == 1


async def test_chunk_extensions_and_trailers() -> None:
    response = (
        OK_HEAD + b"transfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n"
        b'5;name=value;quoted="a b"\r\nhello\r\n1;x\r\n!\r\n0;last\r\n'
        b"x-trailer: t\r\nx-other: u\r\n\r\n"
    )
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (server, pool):
            for _ in range(2):
                async with pool.request("GET", "/", []) as resp:
                    assert await resp.read() == b"hello!"
                    assert resp.header(b"x-trailer") is None  # trailers are dropped
                    assert resp.header(b"Content-Type") == b"text/plain"
            assert server.connections == 1 and pool.idle_connections == 1


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_a_body_without_a_length_is_read_to_eof(version: bytes) -> None:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(
            b"HTTP/%s 200 OK\r\ncontent-type: text/plain\r\n\r\npart one, " % version
        )
        await trio.sleep(0.01)
        await stream.send_all(b"part two")
        return False  # close: the end of the body

    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (server, pool):
            for _ in range(2):
                assert await get(pool) == (200, b"part one, part two")
            assert server.connections == 2 and pool.idle_connections == 0


@pytest.mark.parametrize(
    "response",
    [
        fixed(b"bye", b"connection: close\r\n"),
        fixed(b"bye", b"Connection: Keep-Alive, Close\r\n"),
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 3\r\n\r\nbye",
    ],
)
async def test_a_response_that_ends_the_connection_is_not_reused(response: bytes) -> None:
    # The origin keeps its socket open: only the client's reading of the head can tell.
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (server, pool):
            for _ in range(2):
                assert await get(pool) == (200, b"bye")
            assert server.connections == 2 and pool.idle_connections == 0


async def test_a_request_asking_to_close_does_not_reuse_the_connection() -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(fixed(b"ok"))) as (server, pool):
            for _ in range(2):
                async with pool.request("GET", "/", [(b"Connection", b"close")]) as resp:
                    assert await resp.read() == b"ok"
            assert server.connections == 2 and pool.idle_connections == 0


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200\r\n\r\n",  # no reason phrase is fine
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",  # 204 has no body
        b"HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n",
    ],
)
async def test_bodyless_statuses_keep_the_connection(response: bytes) -> None:
    head_only = response.startswith(b"HTTP/1.1 200")
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (server, pool):
            for _ in range(3):
                status, body = await get(pool, "HEAD" if head_only else "GET")
                assert body == b"" and status in (200, 204, 304)
            assert server.connections == 1 and pool.idle_connections == 1


@pytest.mark.parametrize("framing", [b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n"])
async def test_a_head_response_has_no_body_and_keeps_the_connection(framing: bytes) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(OK_HEAD + framing + b"\r\n", fixed(b"after"))) as (
            server,
            pool,
        ):
            assert await get(pool, "HEAD") == (200, b"")
            assert await get(pool) == (200, b"after")
            assert server.connections == 1
            assert server.requests[0].startswith(b"HEAD / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 two-hundred OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF
        b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxyz",  # would need EOF framing
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
)
async def test_invalid_heads_are_protocol_errors(response: bytes) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (_server, pool):
            with pytest.raises(UpstreamProtocolError):
                await get(pool)
            assert pool.active_connections == 0 and pool.idle_connections == 0


async def test_invalid_chunk_size_comes_after_the_data_before_it() -> None:
    response = OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\nmore\r\n"
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (_server, pool):
            async with pool.request("GET", "/", []) as resp:
                chunks = resp.aiter_bytes()
                assert await chunks.__anext__() == b"abcde"  # what came before the error
                with pytest.raises(UpstreamProtocolError):
                    await chunks.__anext__()
            assert pool.idle_connections == 0


@pytest.mark.parametrize(
    "partial_response",
    [
        fixed(b"0123456789")[:-4],
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nab",
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n",  # at a chunk boundary
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n0\r\nx-trailer: t",  # in the trailers
    ],
)
async def test_a_close_mid_body_is_a_read_error(partial_response: bytes) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(partial_response, keep=False)) as (_server, pool):
            async with pool.request("GET", "/", []) as resp:
                with pytest.raises(UpstreamReadError):
                    await resp.read()
            assert pool.idle_connections == 0


async def test_a_close_mid_head_is_a_read_error() -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(OK_HEAD + b"content-le", keep=False)) as (_server, pool):
            with pytest.raises(UpstreamReadError):
                await get(pool)


async def test_a_head_over_64_kib_is_refused() -> None:
    header = b"x-filler: " + b"a" * 1000 + b"\r\n"
    big = OK_HEAD + header * 70 + b"content-length: 2\r\n\r\nok"  # ~70 KiB, complete
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(big)) as (_server, pool):
            with pytest.raises(UpstreamProtocolError):
                await get(pool)
    fits = OK_HEAD + header * 60 + b"content-length: 2\r\n\r\nok"  # ~60 KiB: accepted
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(fits)) as (_server, pool):
            assert await get(pool) == (200, b"ok")


@pytest.mark.parametrize(
    "start", [OK_HEAD + b"x-endless: ", OK_HEAD + b"transfer-encoding: chunked\r\n\r\n0\r\nx-t: "]
)
async def test_a_head_or_trailer_that_never_ends_is_refused(start: bytes) -> None:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(start)
        while True:  # until the client hangs up
            await stream.send_all(b"a" * 4096)

    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (_server, pool):
            with pytest.raises(UpstreamProtocolError):
                await get(pool)


async def test_informational_responses_are_skipped() -> None:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        await trio.sleep(0.01)
        # Two more 1xx and the final response, all in one write.
        await stream.send_all(
            b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
            + fixed(b"final %d" % request, b"x-final: yes\r\n")
        )
        return True

    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (server, pool):
            for i in range(2):
                async with pool.request("POST", "/", [], b"{}") as resp:
                    assert resp.status == 200
                    assert resp.header(b"link") is None and resp.header(b"x-final") == b"yes"
                    assert await resp.read() == b"final %d" % i
            assert server.connections == 1


async def test_bytes_after_a_response_are_never_taken_for_the_next_one() -> None:
    # The origin answers the first request twice in one write. The second answer is not a
    # response to anything: the next request must get its own, on a new connection.
    script = answers(fixed(b"first") + fixed(b"unasked"), fixed(b"second"))
    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (server, pool):
            assert await get(pool) == (200, b"first")
            assert pool.idle_connections == 0
            assert await get(pool) == (200, b"second")
            assert server.connections == 2


async def test_responses_on_one_connection_do_not_leak_into_each_other() -> None:
    # Keep-alive: each response's framing ends exactly where it should; the next request
    # on the same connection gets its own answer, whatever its framing.
    script = answers(
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n",
        fixed(b"two"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        OK_HEAD + b"transfer-encoding: chunked\r\n\r\n4\r\nfour\r\n0\r\nx-t: 1\r\n\r\n",
        fixed(b"five"),
    )
    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (server, pool):
            bodies = [await get(pool) for _ in range(5)]
            assert bodies == [
                (200, b"one"),
                (200, b"two"),
                (204, b""),
                (200, b"four"),
                (200, b"five"),
            ]
            assert server.connections == 1


@pytest.mark.parametrize(
    "response",
    [fixed(b"not read"), OK_HEAD + b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
)
async def test_the_rest_of_a_body_already_buffered_lets_the_connection_be_reused(
    response: bytes,
) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(response)) as (server, pool):
            for _ in range(3):
                async with pool.request("GET", "/", []) as resp:
                    assert resp.status == 200  # the body is never read
            assert server.connections == 1 and pool.idle_connections == 1


async def test_a_body_not_yet_received_costs_the_connection() -> None:
    async def script(stream: trio.SocketStream, connection: int, request: int) -> bool:
        await stream.send_all(OK_HEAD + b"content-length: 10\r\n\r\n01234")
        await trio.sleep(0.05)
        await stream.send_all(b"56789")
        return True

    with trio.fail_after(DEADLINE):
        async with raw_origin(script) as (_server, pool):
            async with pool.request("GET", "/", []) as resp:
                assert resp.status == 200
            assert pool.idle_connections == 0


async def test_the_request_head_on_the_wire() -> None:
    with trio.fail_after(DEADLINE):
        async with raw_origin(answers(fixed(b""))) as (server, pool):
            async with pool.request("POST", "/x?y=1", [(b"X-Id", b"7")], b"hello") as resp:
                await resp.read()
            async with pool.request("GET", "/g", [(b"accept", b"*/*")]) as resp:
                await resp.read()
            host = b"127.0.0.1:%d" % server.port
            assert server.requests == [
                b"POST /x?y=1 HTTP/1.1\r\nhost: %s\r\nX-Id: 7\r\ncontent-length: 5\r\n\r\nhello"
                % host,
                b"GET /g HTTP/1.1\r\nhost: %s\r\naccept: */*\r\n\r\n" % host,
            ]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\nb")],
        [(b"x-evil", b"a\rb")],
        [(b"x-evil", b"a\x00b")],
        [(b"x-evil\r\nhost", b"b")],
        [(b"Host", b"elsewhere")],
        [(b"content-length", b"3")],
        [(b"transfer-encoding", b"chunked")],
    ],
)
def test_requests_that_could_split_or_reframe_are_refused(
    headers: list[tuple[bytes, bytes]],
) -> None:
    pool = UpstreamPool("http://127.0.0.1:9")
    with pytest.raises(ValueError):
        pool.request("POST", "/", headers, b"x")


async def test_an_open_response_holds_neither_the_request_head_nor_its_body() -> None:
    # A stream can stay open for minutes: what was sent (the account's token in the head,
    # a conversation in the body) must not stay alive with it.
    body = bytes(range(256)) * 400
    held_before = sys.getrefcount(body)
    with trio.fail_after(DEADLINE):
        async with (
            raw_origin(answers(fixed(b"ok"))) as (_server, pool),
            pool.request("POST", "/", [], body) as resp,
        ):
            assert sys.getrefcount(body) == held_before
            assert await resp.read() == b"ok"
