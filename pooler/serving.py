"""Serving an ASGI app with Hypercorn's trio worker: shared by the gateway and the emulator."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config

ShutdownTrigger = Callable[[], Awaitable[None]]


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(host: str, port: int, *, graceful_timeout: float = 5.0) -> Config:
    config = Config()
    config.bind = [host_port(host, port)]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    # Hypercorn closes a keep-alive connection after 1,000 requests by default (DESIGN §9).
    config.keep_alive_max_requests = 1_000_000_000
    config.keep_alive_timeout = 75.0
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
