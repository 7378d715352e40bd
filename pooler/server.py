"""Running the gateway: database, actors and the HTTP server under one nursery."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import trio
from hypercorn.trio import serve

from pooler.config import Config
from pooler.db import Database
from pooler.serving import ShutdownTrigger, bound_port, hypercorn_config
from pooler.web.app import create_app
from pooler.web.gateway import Gateway
from pooler.web.settings import GatewaySettings

FINAL_WRITE_BEHIND_S = 5.0


@dataclass(frozen=True, slots=True)
class RunningGateway:
    gateway: Gateway
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def run_gateway(
    config: Config,
    db: Database,
    host: str,
    port: int,
    *,
    settings: GatewaySettings | None = None,
    shutdown_trigger: ShutdownTrigger | None = None,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until `shutdown_trigger` returns; then drain and stop."""
    gateway = Gateway(config, db, settings)
    app = create_app(gateway)
    async with trio.open_nursery() as actors:
        await actors.start(gateway.run)
        if app.mcp is not None:
            await actors.start(app.mcp.run)
        run = partial(
            serve,
            app,
            hypercorn_config(host, port, write_stall=gateway.write_stall),
            shutdown_trigger=shutdown_trigger,
            mode="asgi",
        )
        async with trio.open_nursery() as http:
            binds: list[str] = await http.start(run)
            task_status.started(RunningGateway(gateway, host, bound_port(binds)))
        # The HTTP server has drained: write behind the quota evidence and conversation pins
        # still in memory (a restart keeps them), then stop the actors (the LogWriter
        # flushes on the way out).
        with trio.move_on_after(FINAL_WRITE_BEHIND_S):
            await gateway.flush_write_behind()
        actors.cancel_scope.cancel()
