"""The gateway's one application: a Quart-trio app built by `create_app`, one blueprint per
surface (`backend_codex`, `openai_v1`, `health`, the operator console `pooler.admin_ui`),
and error handlers that answer in the client's JSON shape (the console answers with HTML
pages of its own). The operator MCP endpoint `/mcp` (`pooler.mcp.endpoint`) is a raw ASGI
handler mounted beside the websockets: it answers in JSON-RPC and never meets Quart. The
ingress allowlist (`pooler.web.ingress`) sees every request before any of them.

How a request meets Quart (a body read on demand, relays that push their answer) is in
`quart_http.py`. The websocket routes are not Quart websocket handlers: their raw ASGI
handler is mounted under the app (`asgi_app`), because Quart's websocket layer (a second
task, a queue and a request context per socket) cost more memory per held session than
the budget allows; the measurement is in ops/bench/README.md ("Quart websockets").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as MethodNotAllowedHTTP
from werkzeug.exceptions import NotFound as NotFoundHTTP

from pooler.admin_ui import console_blueprint, http_error_page, is_console_path
from pooler.errors import (
    BadRequest,
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    PoolerError,
    RequestTimeout,
    WebsocketUnsupported,
)
from pooler.mcp.endpoint import McpEndpoint
from pooler.web.asgi import ClientDisconnected
from pooler.web.backend_codex.responses_ws import ResponsesWebsocketRoute, refuse
from pooler.web.backend_codex.routes import backend_codex_blueprint
from pooler.web.health import health_blueprint
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.openai_v1.routes import openai_v1_blueprint
from pooler.web.quart_http import (
    PUSHED,
    GatewayHTTPConnection,
    GatewayRequest,
    error_response,
)
from pooler.web.quart_pipeline import LeanQuartTrio
from pooler.web.route_cache import cache_static_routes

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web")

MCP_PATH = "/mcp"
RawHandler = Callable[[Any, Any, Any], Awaitable[None]]

# Quart's defaults that would fight a gateway (each is tested in tests/integration/
# test_app_shape.py): no body or form caps of Quart's own (each route sets its bound), no
# deadline on a whole body or response (a stream may last minutes; the body has the
# instance's own deadline), no automatic OPTIONS answers.
APP_CONFIG = {
    "MAX_CONTENT_LENGTH": None,
    "BODY_TIMEOUT": None,
    "RESPONSE_TIMEOUT": None,
    "PROVIDE_AUTOMATIC_OPTIONS": False,
    # A `/v1` upload has a few fields and one file (the parts are checked by the route).
    "MAX_FORM_PARTS": 32,
    "MAX_FORM_MEMORY_SIZE": 1024 * 1024,
}


class GatewayApp(LeanQuartTrio):
    """The Quart-trio app, with the raw websocket handlers mounted by path (Quart's
    per-request pipeline trimmed where it did work for nobody: `pooler.web.quart_pipeline`)."""

    asgi_http_class = GatewayHTTPConnection
    request_class = GatewayRequest

    def __init__(self) -> None:
        super().__init__("pooler.web")
        self.config.update(APP_CONFIG)
        self.url_map.merge_slashes = False  # `//x` is not `/x`: a 404, never a redirect
        cache_static_routes(self.url_map)
        self.websocket_routes: dict[str, RawHandler] = {}
        self.mcp: McpEndpoint | None = None  # `/mcp`, raw ASGI like the websockets
        self.gateway: Gateway | None = None  # its instance settings and ingress gate

    async def asgi_app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        gateway = self.gateway
        # The ingress allowlist (pooler.web.ingress), first of all; off, it costs this line.
        if gateway is not None and gateway.instance_settings.ingress.allowlist:
            admitted = scope["type"] == "lifespan" or await gateway.ingress.admit(
                gateway.instance_settings,
                scope,  # type: ignore[arg-type]
                receive,  # type: ignore[arg-type]
                send,  # type: ignore[arg-type]
            )
            if not admitted:
                return
        await self._dispatch(scope, receive, send)

    async def _dispatch(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":
            route = self.websocket_routes.get(scope["path"])
            await (route or refuse_websocket)(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == MCP_PATH and self.mcp is not None:
            await self.mcp(scope, receive, send)  # type: ignore[arg-type]
            return
        await super().asgi_app(scope, receive, send)


def create_app(gateway: Gateway) -> GatewayApp:
    """The gateway's application: every runtime route, health and metrics."""
    app = GatewayApp()
    app.register_blueprint(backend_codex_blueprint(gateway))
    app.register_blueprint(openai_v1_blueprint(gateway))
    app.register_blueprint(health_blueprint(gateway))
    app.register_blueprint(console_blueprint(gateway))
    codex_websocket = ResponsesWebsocketRoute(gateway)
    app.websocket_routes.update(
        {
            "/backend-api/codex/responses": codex_websocket,
            "/backend-api/codex/v1/responses": codex_websocket,
            "/v1/responses": ResponsesWebsocketRoute(gateway, authenticate_v1, public=True),
        }
    )
    app.mcp = McpEndpoint(gateway)
    app.gateway = gateway
    install_error_handlers(app)
    return app


def install_error_handlers(app: GatewayApp) -> None:
    """Every error raised before an answer started becomes the client's JSON error."""

    @app.errorhandler(PoolerError)
    async def pooler_error(error: PoolerError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        from quart import request

        # A console path no route took gets the console's HTML page (the raw path: Quart's
        # `request.path` of `//x` is `/`).
        if "console" in app.blueprints and is_console_path(request.scope["path"]):
            return await http_error_page(error)
        return http_error_response(error, request.method, request.path)

    @app.errorhandler(ClientDisconnected)
    async def client_left(error: ClientDisconnected) -> Response:
        return PUSHED  # nobody to answer

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        from quart import request

        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return error_response(PoolerError("internal error in the gateway"))


def http_error_response(error: HTTPException, method: str, path: str) -> Response:
    """A werkzeug HTTP error (routing, Quart's form parser) in the gateway's error tree."""
    if isinstance(error, NotFoundHTTP):
        return error_response(NotFound(f"no such endpoint: {path}"))
    if isinstance(error, MethodNotAllowedHTTP):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        refused = MethodNotAllowed(f"{method} is not allowed here (allowed: {allowed})")
        return error_response(refused, [(b"allow", allowed.encode())])
    if error.code == 408:
        return error_response(RequestTimeout("the request body did not arrive in time"))
    if error.code == 413:
        return error_response(BodyTooLarge("the request body is too large"))
    if error.code is not None and error.code < 500:
        return error_response(BadRequest(error.description or "bad request"))
    return error_response(PoolerError("internal error in the gateway"))


async def refuse_websocket(scope: Any, receive: Any, send: Any) -> None:
    """A websocket on a path that takes none: 426, so a client falls back to HTTP at once."""
    await receive()  # websocket.connect
    refused = WebsocketUnsupported()
    await refuse(scope, send, refused.status, refused.body_bytes(), refused.headers())
