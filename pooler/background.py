"""A `worker` or `scheduler` process (`pooler.roles`): the leader election and the
once-per-cluster jobs, and an HTTP listener for the probes only (/healthz, /readyz,
/metrics). It serves no client route: anything else answers 404 (a websocket, 426)."""

from __future__ import annotations

import logging
import os
from functools import partial

import trio
from hypercorn.trio import serve

from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import Supervisor
from pooler.actors.scheduler import Scheduler
from pooler.cluster_jobs import cluster_jobs
from pooler.config import Config
from pooler.db import Database
from pooler.drain import Drain
from pooler.serving import ShutdownTrigger, bound_port, hypercorn_config
from pooler.store.common import CONFIG_CHANNEL
from pooler.store.instance_settings import get_instance_settings
from pooler.web.app import GatewayApp, install_error_handlers
from pooler.web.gateway import cluster_leader
from pooler.web.health import health_blueprint
from pooler.web.metrics import Metrics, node_state
from pooler.web.metrics_auth import MetricsAuth

log = logging.getLogger("pooler.background")

# As the gateway's own actors: five crashes a minute, then the process ends.
CORE_BUDGET = RestartBudget(5, 60.0)
RELOAD_DEBOUNCE_S = 0.05


class BackgroundNode:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.configured = False
        self.node_id = os.urandom(6).hex()
        self.cluster_jobs = Scheduler(cluster_jobs(db, config), run_first=True)
        self.leader = cluster_leader(config, db, self.node_id, self.cluster_jobs)
        self.metrics = Metrics(None, lambda: node_state(self.leader, (self.cluster_jobs,)))
        self.metrics_auth = MetricsAuth(config.secret_key)
        self._settings_wanted = trio.Event()
        # No client work to drain: /readyz turns 503 when the trigger fires, then it stops.
        self.drain = Drain(config.drain_seconds, 0.0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                actors = Supervisor(nursery)
                await actors.start_child("settings", self.follow_settings, budget=CORE_BUDGET)
                if self.leader is not None:
                    await actors.start_child("leader", self.leader.run, budget=CORE_BUDGET)
                self.configured = True
                task_status.started()
        finally:
            self.configured = False

    async def follow_settings(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Apply the instance settings this node uses (the /metrics token): read once LISTEN
        is on (no change missed in between), then again on every configuration NOTIFY."""
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    self.db.listen_channels,
                    (CONFIG_CHANNEL,),
                    self._settings_changed,
                    on_reconnect=lambda: self._settings_changed("", ""),
                )
            )
            await self._apply_settings()
            task_status.started()
            while True:
                await self._settings_wanted.wait()
                await trio.sleep(RELOAD_DEBOUNCE_S)
                self._settings_wanted = trio.Event()
                try:
                    await self._apply_settings()
                except Exception as exc:  # keep the last good settings; try again
                    log.warning("instance settings reload failed: %s", type(exc).__name__)
                    await trio.sleep(1.0)
                    self._settings_wanted.set()

    def _settings_changed(self, channel: str, payload: str) -> None:
        self._settings_wanted.set()

    async def _apply_settings(self) -> None:
        _, settings = await self.db.run(get_instance_settings)
        self.metrics_auth.configure(settings.metrics_token_digest)


def health_app(node: BackgroundNode) -> GatewayApp:
    app = GatewayApp()
    app.register_blueprint(health_blueprint(node))
    install_error_handlers(app)
    return app


async def run_background(
    config: Config,
    db: Database,
    host: str,
    port: int,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled or until `shutdown_trigger` returns; reports the bound port."""
    node = BackgroundNode(config, db)

    async def draining_trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        node.drain.begin()

    async with trio.open_nursery() as actors:
        await actors.start(node.run)
        run = partial(
            serve,
            health_app(node),
            hypercorn_config(host, port),
            shutdown_trigger=draining_trigger,
            mode="asgi",
        )
        async with trio.open_nursery() as http:
            binds: list[str] = await http.start(run)
            task_status.started(bound_port(binds))
        actors.cancel_scope.cancel()
