"""The hot-path HTTP/1.1 client against a scripted h11 origin on a real loopback socket."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import pytest
import trio
from tls_support import self_signed_pem

from pooler.upstream.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadError,
)
from pooler.upstream.http1 import UpstreamPool

DEADLINE = 10  # seconds; every test that waits on a socket runs under it


class Exchange:
    """One request as the origin sees it, with the means to answer it."""

    def __init__(
        self, server: Origin, stream: trio.abc.Stream, h: h11.Connection, connection: int
    ) -> None:
        self.server, self.stream, self.h = server, stream, h
        self.connection = connection  # which accepted socket, counting from 0
        self.request: h11.Request
        self.body = b""
        self.keep_open = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.request.headers if k == name), None)

    async def respond(self, body: bytes = b"", status: int = 200) -> None:
        head = [(b"content-length", b"%d" % len(body)), (b"x-served-by", b"%d" % self.connection)]
        events = [h11.Response(status_code=status, headers=head), h11.Data(data=body)]
        await self.send_raw(b"".join(self.h.send(e) or b"" for e in [*events, h11.EndOfMessage()]))

    async def start_chunked(self) -> None:
        await self.send(h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")]))

    async def send(self, event: h11.Event) -> None:
        await self.stream.send_all(self.h.send(event) or b"")

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def wait_client_gone(self) -> None:
        """Read until the client closes its end; the origin's proof of a disconnect."""
        self.keep_open = False
        try:
            while await self.stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.server.client_gone.set()


App = Callable[[Exchange], Awaitable[None]]


class Origin:
    def __init__(self, app: App) -> None:
        self.app = app
        self.port = 0
        self.connections = 0
        self.open_sockets = 0
        self.exchanges: list[Exchange] = []
        self.client_gone = trio.Event()
        self.socket_closed = trio.Event()
        self.scheme = "http"
        self.pools: list[UpstreamPool] = []

    def pool(self, path: str = "", **options: Any) -> UpstreamPool:
        """A client pool for this origin, closed when the origin stops."""
        pool = UpstreamPool(f"{self.scheme}://127.0.0.1:{self.port}{path}", **options)
        self.pools.append(pool)
        return pool

    async def handle(self, stream: trio.abc.Stream) -> None:
        index = self.connections
        self.connections += 1
        self.open_sockets += 1
        h = h11.Connection(h11.SERVER)
        try:
            while await self._serve_one(Exchange(self, stream, h, index)):
                h.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            self.open_sockets -= 1
            await trio.aclose_forcefully(stream)
            self.socket_closed.set()

    async def _serve_one(self, exchange: Exchange) -> bool:
        stream, h = exchange.stream, exchange.h
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                exchange.request = event
            elif isinstance(event, h11.Data):
                exchange.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False  # the client closed an idle connection
        self.exchanges.append(exchange)
        await self.app(exchange)
        return exchange.keep_open and h.our_state is h11.DONE and h.their_state is h11.DONE


@asynccontextmanager
async def origin(app: App, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Origin]:
    server = Origin(app)
    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            serve = partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        else:
            serve = partial(
                trio.serve_ssl_over_tcp, server.handle, 0, ssl_context, host="127.0.0.1"
            )
        (listener,) = await nursery.start(serve)
        tcp_listener = listener if ssl_context is None else listener.transport_listener
        server.port = tcp_listener.socket.getsockname()[1]
        server.scheme = "http" if ssl_context is None else "https"
        try:
            yield server
        finally:
            for pool in server.pools:
                await pool.aclose()
            nursery.cancel_scope.cancel()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def echo(ex: Exchange) -> None:
    await ex.respond(b"%s %s %s" % (ex.request.method, ex.request.target, ex.body))


async def test_sequential_requests_share_one_keep_alive_connection() -> None:
    with trio.fail_after(DEADLINE):
        async with origin(echo) as server:
            pool = server.pool("/backend-api/codex/")
            for method, body in (("GET", b""), ("POST", b'{"a":1}'), ("GET", b"")):
                async with pool.request(method, "/responses", [(b"x-id", b"7")], body) as resp:
                    assert resp.status == 200
                    assert resp.header(b"X-Served-By") == b"0"
                    assert (
                        await resp.read()
                        == f"{method} /backend-api/codex/responses ".encode() + body
                    )
            assert server.connections == 1 and pool.idle_connections == 1
            get, post, _ = server.exchanges
            assert get.header(b"host") == f"127.0.0.1:{server.port}".encode()
            assert get.header(b"content-length") is None and get.header(b"x-id") == b"7"
            assert post.header(b"content-length") == b"7"
            await pool.aclose()


async def test_chunks_reach_the_caller_before_the_body_ends() -> None:
    proceed = trio.Event()

    async def app(ex: Exchange) -> None:
        await ex.start_chunked()
        await ex.send(h11.Data(data=b"event: one\n\n"))
        await proceed.wait()  # the test sets this only after it got the first chunk
        await ex.send(h11.Data(data=b"event: two\n\n"))
        await ex.send(h11.EndOfMessage())

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            async with pool.request("POST", "/responses", [], b"{}") as resp:
                chunks = resp.aiter_bytes()
                assert await chunks.__anext__() == b"event: one\n\n"
                proceed.set()
                assert [chunk async for chunk in chunks] == [b"event: two\n\n"]
            assert pool.idle_connections == 1  # read to the end: kept
            await pool.aclose()


async def test_chunks_that_came_in_one_read_reach_the_caller_as_one_piece() -> None:
    proceed = trio.Event()
    events = [b"event: %d\n\n" % i for i in range(5)]

    async def app(ex: Exchange) -> None:
        await ex.start_chunked()
        # Three chunks in one write, then two more with the end of the body, later.
        await ex.send_raw(b"".join(ex.h.send(h11.Data(data=e)) or b"" for e in events[:3]))
        await proceed.wait()
        tail = [h11.Data(data=e) for e in events[3:]]
        await ex.send_raw(b"".join(ex.h.send(e) or b"" for e in [*tail, h11.EndOfMessage()]))

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            async with pool.request("POST", "/responses", [], b"{}") as resp:
                chunks = resp.aiter_bytes()
                assert await chunks.__anext__() == b"".join(events[:3])  # one read, one piece
                proceed.set()
                assert [chunk async for chunk in chunks] == [b"".join(events[3:])]
            assert pool.idle_connections == 1  # the end came with the last piece: kept
            await pool.aclose()


async def test_leaving_mid_stream_closes_the_upstream_socket() -> None:
    async def app(ex: Exchange) -> None:
        await ex.start_chunked()
        await ex.send(h11.Data(data=b"data: first\n\n"))
        await ex.wait_client_gone()

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            async with pool.request("GET", "/stream", []) as resp:
                async for _chunk in resp.aiter_bytes():
                    break
            await server.client_gone.wait()
            assert pool.idle_connections == 0 and pool.active_connections == 0


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}", max_connections=1)
    for _ in range(2):  # the failed attempt gave its slot back
        with trio.fail_after(DEADLINE), pytest.raises(UpstreamConnectError):
            async with pool.request("GET", "/", []):
                pass
    assert pool.active_connections == 0


@pytest.mark.parametrize(
    "head",
    [b"content-length: 100\r\n\r\n0123456789", b"transfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n"],
)
async def test_origin_closing_mid_body_is_a_read_error(head: bytes) -> None:
    async def app(ex: Exchange) -> None:
        await ex.send_raw(b"HTTP/1.1 200 OK\r\n" + head)
        ex.keep_open = False

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            async with pool.request("GET", "/", []) as resp:
                with pytest.raises(UpstreamReadError):
                    await resp.read()
            assert pool.idle_connections == 0


async def test_fresh_connection_closed_before_the_head_is_not_retried() -> None:
    async def app(ex: Exchange) -> None:
        ex.keep_open = False

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            with pytest.raises(UpstreamReadError):
                async with pool.request("POST", "/", [], b"x"):
                    pass
            assert server.connections == 1 and pool.active_connections == 0


async def test_garbage_from_the_origin_is_a_protocol_error() -> None:
    async def app(ex: Exchange) -> None:
        await ex.send_raw(b"HTTP/1.1 two-hundred OK\r\n\r\n")
        await ex.wait_client_gone()

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            with pytest.raises(UpstreamProtocolError):
                async with pool.request("GET", "/", []):
                    pass
            await server.client_gone.wait()


async def test_unread_body_already_buffered_does_not_cost_the_connection() -> None:
    async def app(ex: Exchange) -> None:
        await ex.respond(b"not found", status=404)  # in one write: buffered with the head

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            for _ in range(3):
                async with pool.request("GET", "/", []) as resp:
                    assert resp.status == 404  # the caller looks at the status only
            assert server.connections == 1 and pool.idle_connections == 1


async def test_idle_connection_closed_by_the_origin_is_replaced() -> None:
    async def app(ex: Exchange) -> None:
        await ex.respond(b"ok")
        ex.keep_open = False  # close after answering, without a Connection: close header

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            async with pool.request("GET", "/", []) as resp:
                assert await resp.read() == b"ok"
            await server.socket_closed.wait()
            async with pool.request("GET", "/", []) as resp:
                assert await resp.read() == b"ok"
            assert server.connections == 2


async def test_reused_connection_dying_before_the_response_is_retried_once() -> None:
    async def app(ex: Exchange) -> None:
        if ex.connection == 0 and len(ex.server.exchanges) == 2:
            ex.keep_open = False  # read the second request, then hang up without a byte
        else:
            await ex.respond(b"served by %d" % ex.connection)

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            for expected in (b"served by 0", b"served by 1", b"served by 1"):
                async with pool.request("POST", "/", [], b"{}") as resp:
                    assert await resp.read() == expected
            assert server.connections == 2 and len(server.exchanges) == 4


@pytest.mark.parametrize("answer", [False, True])
async def test_cancellation_closes_the_socket(answer: bool) -> None:
    async def app(ex: Exchange) -> None:
        if answer:
            await ex.start_chunked()
            await ex.send(h11.Data(data=b"data: first\n\n"))
        await ex.wait_client_gone()

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool()
            fds = open_fds()
            with trio.move_on_after(0.2) as scope:
                async with pool.request("GET", "/", []) as resp:
                    async for _chunk in resp.aiter_bytes():
                        pass
            assert scope.cancelled_caught
            await server.socket_closed.wait()
            assert pool.active_connections == 0 and pool.idle_connections == 0
            assert open_fds() <= fds


async def test_max_connections_bounds_concurrent_sockets() -> None:
    release = trio.Event()
    two_arrived = trio.Event()
    in_flight = max_in_flight = 0

    async def app(ex: Exchange) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        if in_flight == 2:
            two_arrived.set()
        await release.wait()
        in_flight -= 1
        await ex.respond(b"ok")

    async def one(pool: UpstreamPool) -> None:
        async with pool.request("GET", "/", []) as resp:
            assert await resp.read() == b"ok"

    with trio.fail_after(DEADLINE):
        async with origin(app) as server:
            pool = server.pool(max_connections=2)
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(one, pool)
                await two_arrived.wait()
                await trio.sleep(0.1)  # room for a third to sneak in, if the cap leaked
                assert pool.active_connections == 2 and server.connections == 2
                release.set()
            assert max_in_flight == 2 and server.connections == 2
            assert len(server.exchanges) == 5


async def test_aclose_and_bad_requests() -> None:
    with trio.fail_after(DEADLINE):
        async with origin(echo) as server:
            pool = server.pool()
            async with pool.request("GET", "/", []) as resp:
                await resp.read()
            with pytest.raises(ValueError):
                pool.request("GET", "/", [(b"x-evil", b"a\r\nhost: elsewhere")])
            with pytest.raises(ValueError):
                pool.request("GET", "/a b", [])
            await pool.aclose()
            await server.socket_closed.wait()
            with pytest.raises(UpstreamConnectError):
                async with pool.request("GET", "/", []):
                    pass


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context that trusts exactly that certificate."""
    cert_pem, key_pem = self_signed_pem("pooler test origin")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(key_path, "wb") as f:
            f.write(key_pem)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_with_keep_alive_and_certificate_checks() -> None:
    server_ctx, client_ctx = _tls_contexts()
    with trio.fail_after(DEADLINE):
        async with origin(echo, server_ctx) as server:
            pool = server.pool("/api", ssl_context=client_ctx)
            for _ in range(2):
                async with pool.request("POST", "/x", [], b"hi") as resp:
                    assert await resp.read() == b"POST /api/x hi"
            assert server.connections == 1
            await pool.aclose()

            untrusting = server.pool()  # default CA store
            with pytest.raises(UpstreamConnectError):
                async with untrusting.request("GET", "/", []):
                    pass
            assert untrusting.active_connections == 0
