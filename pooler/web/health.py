"""/healthz (the process answers), /readyz (the database answers), /metrics (Prometheus)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from pooler.web.asgi import Send, send_bytes, send_json

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

READY_PROBE_TIMEOUT_S = 1.0


async def health_route(send: Send) -> None:
    await send_json(send, 200, {"status": "ok"})


async def ready_route(gateway: Gateway, send: Send) -> None:
    ready = False
    with trio.move_on_after(READY_PROBE_TIMEOUT_S):
        ready = gateway.configured and await gateway.db.ping()
    if ready:
        await send_json(send, 200, {"status": "ready"})
    else:
        await send_json(send, 503, {"status": "not_ready"}, [(b"retry-after", b"1")])


async def metrics_route(gateway: Gateway, send: Send) -> None:
    body = gateway.metrics.render()
    await send_bytes(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4")])
