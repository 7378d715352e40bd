"""The gateway's ASGI application: a table of runtime routes, JSON errors for the rest."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pooler.errors import MethodNotAllowed, NotFound, PoolerError, WebsocketUnsupported
from pooler.serving import serve_lifespan
from pooler.web.asgi import Receive, Scope, Send, send_error
from pooler.web.backend_codex.compact import CompactRoute
from pooler.web.backend_codex.models import ModelsRoute
from pooler.web.backend_codex.relay import FILES_PREFIX, relay_routes
from pooler.web.backend_codex.responses import responses_route
from pooler.web.backend_codex.responses_ws import ResponsesWebsocketRoute, refuse
from pooler.web.backend_codex.usage import UsageRoute
from pooler.web.health import health_route, metrics_route, ready_route
from pooler.web.openai_v1.audio import TRANSCRIPTIONS_PATH, V1TranscriptionsRoute
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.openai_v1.files import V1_FILES_PREFIX, v1_files_routes
from pooler.web.openai_v1.models import MODEL_PREFIX, MODELS_PATH, V1ModelsRoute
from pooler.web.openai_v1.responses import v1_routes
from pooler.web.openai_v1.unsupported import V1_PREFIX, unsupported_v1
from pooler.web.openai_v1.usage import USAGE_PATH, V1UsageRoute

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("pooler.web")
WEBSOCKET_PATHS = frozenset(
    {"/backend-api/codex/responses", "/backend-api/codex/v1/responses", "/v1/responses"}
)


def build_routes(gateway: Gateway) -> dict[str, dict[str, Handler]]:
    responses = responses_route(gateway)
    models = ModelsRoute(gateway)
    relays = relay_routes(gateway)
    compact = CompactRoute(gateway)
    usage = UsageRoute(gateway)
    v1_models = V1ModelsRoute(gateway)

    async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
        await health_route(send)

    async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
        await ready_route(gateway, send)

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        await metrics_route(gateway, send)

    return {
        "/backend-api/codex/responses": {"POST": responses},
        "/backend-api/codex/v1/responses": {"POST": responses},
        "/backend-api/codex/responses/compact": {"POST": compact},
        "/backend-api/codex/v1/responses/compact": {"POST": compact},
        "/backend-api/codex/models": {"GET": models},
        "/backend-api/codex/v1/models": {"GET": models},
        # Files (`FILES_PREFIX` stands for `…/files/{id}/uploaded`), transcription, realtime.
        **{path: {"POST": relay} for path, relay in relays.items()},
        "/backend-api/wham/usage": {"GET": usage},
        "/wham/usage": {"GET": usage},
        "/api/codex/usage": {"GET": usage},
        **v1_routes(gateway),
        MODELS_PATH: {"GET": v1_models},
        MODEL_PREFIX: {"GET": v1_models},  # stands for /v1/models/{id}
        **v1_files_routes(gateway),  # V1_FILES_PREFIX stands for /v1/files/{id}[/content]
        TRANSCRIPTIONS_PATH: {"POST": V1TranscriptionsRoute(gateway)},
        USAGE_PATH: {"GET": V1UsageRoute(gateway)},
        "/healthz": {"GET": healthz},
        "/readyz": {"GET": readyz},
        "/metrics": {"GET": metrics},
    }


def build_app(gateway: Gateway) -> Handler:
    routes = build_routes(gateway)
    websocket_responses = ResponsesWebsocketRoute(gateway)
    websocket_v1 = ResponsesWebsocketRoute(gateway, authenticate_v1, public=True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            methods = routes.get(route_key(path))
            handler = methods.get(scope["method"]) if methods is not None else None
            if handler is None and path.startswith(V1_PREFIX):
                await unsupported_v1(gateway, scope, send)  # after authentication
                return
            if methods is None:
                await send_error(send, NotFound(f"no such endpoint: {scope['path']}"))
                return
            if handler is None:
                allowed = ", ".join(sorted(methods))
                error = MethodNotAllowed(
                    f"{scope['method']} is not allowed here (allowed: {allowed})"
                )
                await send_error(send, error, [(b"allow", allowed.encode())])
                return
            await _guarded(handler, scope, receive, send)
        elif kind == "websocket":
            path = scope["path"]
            if path in WEBSOCKET_PATHS:
                route = websocket_v1 if path.startswith(V1_PREFIX) else websocket_responses
                await route(scope, receive, send)
            else:
                await _refuse_websocket(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(receive, send)

    return app


def route_key(path: str) -> str:
    """The routing table's key for `path`: prefixes stand for the paths with an id."""
    if path.startswith(FILES_PREFIX):
        return FILES_PREFIX
    if path.startswith(V1_FILES_PREFIX):
        return V1_FILES_PREFIX
    if path.startswith(MODEL_PREFIX):
        return MODEL_PREFIX
    return path


async def _guarded(handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    """A bug in a handler becomes a JSON 500 (if nothing was sent yet), never a traceback.

    `send` is not wrapped (that would cost a call per relayed chunk): if the response had
    already started, the server refuses the second start and that refusal is ignored.
    """
    try:
        await handler(scope, receive, send)
    except Exception:
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        with contextlib.suppress(Exception):
            await send_error(send, PoolerError("internal error in the gateway"))


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A websocket on a path that takes none: 426, so a client falls back to HTTP at once."""
    await receive()  # websocket.connect
    refused = WebsocketUnsupported()
    await refuse(scope, send, refused.status, refused.body_bytes(), refused.headers())
