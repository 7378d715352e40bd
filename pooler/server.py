"""Running the gateway: database, actors and the HTTP server under one nursery."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import trio
from hypercorn.trio import serve

from pooler.config import Config
from pooler.db import Database
from pooler.drain import deadline_after
from pooler.gc_tuning import collector_settled
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
    """Serve until cancelled or until `shutdown_trigger` returns; then drain and stop.

    Draining (pooler.drain): /readyz answers 503 and idle websockets close (1012) at once;
    the listener accepts for a short grace, then closes; requests and streams in flight
    have until `config.drain_seconds` after the trigger (websocket turns a margin less)."""
    gateway = Gateway(config, db, settings)
    app = create_app(gateway)
    drain = gateway.drain
    with collector_settled() as settle_gc:
        async with trio.open_nursery() as actors:
            await actors.start(gateway.run)
            if app.mcp is not None:
                await actors.start(app.mcp.run)
            trigger: ShutdownTrigger | None = None
            if shutdown_trigger is not None:
                stop = shutdown_trigger

                async def trigger() -> None:
                    await stop()
                    drain.begin()
                    actors.start_soon(deadline_after, drain)
                    await trio.sleep(drain.accept_grace)

            config_http = hypercorn_config(
                host, port, graceful_timeout=drain.server_timeout, write_stall=gateway.write_stall
            )
            run = partial(
                serve,
                app,
                config_http,
                shutdown_trigger=trigger,
                mode="asgi",
            )
            async with trio.open_nursery() as http:
                binds: list[str] = await http.start(run)
                await gateway.stand_for_leader()
                settle_gc()  # start-up's objects out of every later collection
                task_status.started(RunningGateway(gateway, host, bound_port(binds)))
            # The HTTP server has drained: write behind the quota evidence and conversation
            # pins still in memory (a restart keeps them), then stop the actors (the
            # LogWriter flushes on the way out).
            with trio.move_on_after(FINAL_WRITE_BEHIND_S):
                await gateway.flush_write_behind()
            actors.cancel_scope.cancel()
