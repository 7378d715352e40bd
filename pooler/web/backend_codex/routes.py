"""The `backend_codex` blueprint: every route a Codex client calls on the gateway as it
would on the ChatGPT backend (protocol §1). Each handler authenticates, leases an account
by messaging the PoolSupervisor, relays and releases (the route modules beside this one);
the websocket side of `/responses` is mounted by the app (pooler/web/app.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from quart import Blueprint

from pooler.web.backend_codex.compact import CompactRoute
from pooler.web.backend_codex.models import ModelsRoute
from pooler.web.backend_codex.relay import FILES_PATH, relay_routes
from pooler.web.backend_codex.responses import responses_route
from pooler.web.backend_codex.usage import UsageRoute
from pooler.web.quart_http import GatewayRequest, current_request

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

Route = Callable[[GatewayRequest], Awaitable["Response"]]


def backend_codex_blueprint(gateway: Gateway) -> Blueprint:
    codex = Blueprint("backend_codex", __name__)

    def add(paths: tuple[str, ...], endpoint: str, route: Route, method: str) -> None:
        async def view(**_path: str) -> Response:
            return await route(current_request())

        for path in paths:
            codex.add_url_rule(path, endpoint, view, methods=[method])

    responses = responses_route(gateway)
    add(
        ("/backend-api/codex/responses", "/backend-api/codex/v1/responses"),
        "responses",
        responses,
        "POST",
    )
    compact = CompactRoute(gateway)
    add(
        ("/backend-api/codex/responses/compact", "/backend-api/codex/v1/responses/compact"),
        "compact",
        compact,
        "POST",
    )
    models = ModelsRoute(gateway)
    add(("/backend-api/codex/models", "/backend-api/codex/v1/models"), "models", models, "GET")
    usage = UsageRoute(gateway)
    add(("/backend-api/wham/usage", "/wham/usage", "/api/codex/usage"), "usage", usage, "GET")
    relays = relay_routes(gateway)
    # `…/files/{id}/uploaded`: the relay reads the id from the path as sent (raw_path).
    add((FILES_PATH + "/<path:file_path>",), "files_uploaded", relays.pop("finalize"), "POST")
    for path, relay in relays.items():
        add((path,), relay.spec.route, relay, "POST")
    return codex
