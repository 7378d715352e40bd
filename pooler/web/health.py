"""The `health` blueprint: /healthz (the process answers), /readyz (the database answers
and the process is not draining), /metrics (Prometheus; a bearer token once one is
configured, `pooler.web.metrics_auth`). The probes stay open."""

from __future__ import annotations

from typing import Protocol

import trio
from quart import Blueprint, Response, request

from pooler.db import Database
from pooler.drain import Drain
from pooler.errors import AuthError
from pooler.web.metrics import Metrics
from pooler.web.metrics_auth import MetricsAuth
from pooler.web.quart_http import error_response, json_response

READY_PROBE_TIMEOUT_S = 1.0


class HealthSource(Protocol):
    """What the probes read: the Gateway, or a background node (`pooler.background`)."""

    configured: bool
    db: Database
    metrics: Metrics
    metrics_auth: MetricsAuth
    drain: Drain


def health_blueprint(gateway: HealthSource) -> Blueprint:
    health = Blueprint("health", __name__)

    @health.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @health.get("/readyz")
    async def readyz() -> Response:
        ready = False
        if gateway.drain.draining:  # a load balancer stops sending here first
            return json_response({"status": "draining"}, 503, [("retry-after", "1")])
        with trio.move_on_after(READY_PROBE_TIMEOUT_S):
            ready = gateway.configured and await gateway.db.ping()
        if ready:
            return json_response({"status": "ready"})
        return json_response({"status": "not_ready"}, 503, [("retry-after", "1")])

    @health.get("/metrics")
    async def metrics() -> Response:
        if not gateway.metrics_auth.allows(request.scope["headers"]):
            refused = AuthError("a valid metrics token is required", code="metrics_token_required")
            return error_response(refused, [(b"www-authenticate", b"Bearer")])
        body = gateway.metrics.render()
        return Response(body, headers={"content-type": "text/plain; version=0.0.4"})

    return health
