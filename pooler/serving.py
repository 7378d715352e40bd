"""Serving an ASGI app with Hypercorn's trio worker: shared by the gateway and the emulator."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config

from pooler.client_gone import report_client_gone
from pooler.closed_connections import end_idle_timer_with_reading
from pooler.http_server import serve_http1_ourselves
from pooler.idle_timer import start_idle_timers_soon
from pooler.write_stall import WriteStall, stall_bounded_writes

log = logging.getLogger("pooler.serving")

ShutdownTrigger = Callable[[], Awaitable[None]]


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def refuse_websocket_compression() -> None:
    """Make Hypercorn ignore a client's `permessage-deflate` offer (DESIGN §9).

    Each compressed websocket keeps zlib state (up to ~300 KiB) for its whole life, against
    a budget of 40 KiB per idle session, while Codex frames are small JSON on a local or
    fast link. The Codex CLI offers the extension and works without it (protocol §1.3), but
    Hypercorn always accepts it and gives an ASGI app no say, so its handshake is wrapped:
    the offer is dropped before the answer is built. Idempotent."""
    from hypercorn.protocol import ws_stream

    accept = ws_stream.Handshake.accept
    if getattr(accept, "_refuses_compression", False):
        return

    def accept_uncompressed(
        self: ws_stream.Handshake, subprotocol: str | None, additional_headers: Any
    ) -> Any:
        self.extensions = None
        return accept(self, subprotocol, additional_headers)

    accept_uncompressed._refuses_compression = True  # type: ignore[attr-defined]
    ws_stream.Handshake.accept = accept_uncompressed  # type: ignore[method-assign]


def bound_websocket_messages() -> None:
    """Close a websocket as soon as a message passes the size limit (DESIGN §8).

    Hypercorn (0.18) sends close 1009 when a message grows past
    `websocket_max_message_size`, but keeps the message buffer and the socket: it waits
    for the client's close frame while every later data or continuation frame is appended
    to the buffer again (one socket grew the process by 580 MiB). After each batch of
    received bytes is handled, a buffer over the limit is dropped and the stream closed,
    which closes the TCP connection: nothing more is read, so nothing more is buffered.
    The bytes read before that are bounded by the limit plus one read (64 KiB); the same
    bound holds for one huge frame, which wsproto delivers in pieces as they arrive.
    Idempotent."""
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import StreamClosed

    handle_events = ws_stream.WSStream._handle_events
    if getattr(handle_events, "_bounded", False):
        return

    async def handle_events_bounded(self: ws_stream.WSStream) -> None:
        await handle_events(self)
        if self.buffer.length > self.buffer.max_length and not self.closed:
            self.buffer.clear()
            await self.send(StreamClosed(stream_id=self.stream_id))

    handle_events_bounded._bounded = True  # type: ignore[attr-defined]
    ws_stream.WSStream._handle_events = handle_events_bounded  # type: ignore[method-assign]


def contained(run: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """`run` (one connection's handler) with its failures kept to its connection."""

    async def run_contained(self: Any) -> None:
        try:
            await run(self)
        except Exception as exc:
            log.warning("a connection's handler failed: %s", _describe(exc))

    run_contained._contained = True  # type: ignore[attr-defined]
    run_contained.__wrapped__ = run  # type: ignore[attr-defined]
    return run_contained


def contain_connection_failures() -> None:
    """Keep an error in one connection's handler from ending the whole server.

    Hypercorn (0.18) serves every connection in one nursery, so an exception escaping one
    handler stops the listener for everybody. One does escape: when the gateway closes a
    websocket while the client's own close frame arrives, Hypercorn answers that frame
    while it is shutting the socket's write side, and trio raises BusyResourceError. The
    connection is ending anyway; only it should end. Idempotent."""
    from hypercorn.trio import tcp_server

    if not getattr(tcp_server.TCPServer.run, "_contained", False):
        tcp_server.TCPServer.run = contained(  # type: ignore[assignment,method-assign]
            tcp_server.TCPServer.run
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(_describe(inner) for inner in exc.exceptions)
    return type(exc).__name__


class ServerConfig(Config):
    """Hypercorn's config, with the deadline its socket writes run under (pooler.write_stall)."""

    write_stall: WriteStall


def hypercorn_config(
    host: str,
    port: int,
    *,
    graceful_timeout: float = 5.0,
    write_stall: WriteStall | None = None,
) -> ServerConfig:
    """The server's config; `write_stall` is its owner's (the gateway tunes it at run time),
    a fresh default otherwise."""
    refuse_websocket_compression()
    bound_websocket_messages()
    contain_connection_failures()
    stall_bounded_writes()
    report_client_gone()
    end_idle_timer_with_reading()
    start_idle_timers_soon()
    serve_http1_ourselves()
    config = ServerConfig()
    config.write_stall = write_stall or WriteStall()
    config.bind = [host_port(host, port)]
    config.accesslog = None
    # Hypercorn's own lines go through the process's handler, so they take its format
    # (text or JSON, pooler.log_format), at WARNING and above.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.errorlog.setLevel(logging.WARNING)
    config.loglevel = "WARNING"
    # Hypercorn closes a keep-alive connection after 1,000 requests by default (DESIGN §9).
    config.keep_alive_max_requests = 1_000_000_000
    config.keep_alive_timeout = 75.0
    # A request head must arrive within keep_alive_timeout (Hypercorn's idle timer runs until
    # it is complete) and 16 KiB; a body has its own deadline (pooler.web.request_body). No
    # read_timeout: it is per receive on every connection, and would end a silent client's
    # SSE stream or websocket.
    config.h11_max_incomplete_size = 16 * 1024
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    config.websocket_ping_interval = None
    return config


def bound_port(binds: list[str]) -> int:
    return int(binds[0].rsplit(":", 1)[1])


async def wait_for_signal() -> None:
    """A shutdown trigger: returns on SIGINT or SIGTERM (Hypercorn's trio serve ignores them
    unless it is given one)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge ASGI lifespan startup and shutdown (the apps' state lives in actors)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
