"""The emulator as one raw ASGI 3 app: Codex backend, OAuth server and control API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pooler.emulator import backend, control, files, oauth, signin_http
from pooler.emulator.asgi import ASGIApp, Receive, Scope, Send, deny_websocket, send_rejection
from pooler.emulator.rejections import method_not_allowed, not_found
from pooler.emulator.responses_http import handle_responses
from pooler.emulator.state import EmulatorState
from pooler.emulator.ws import handle_websocket
from pooler.serving import serve_lifespan

Handler = Callable[[EmulatorState, Scope, Receive, Send], Awaitable[None]]

RESPONSES_PATH = "/backend-api/codex/responses"

ROUTES: dict[str, dict[str, Handler]] = {
    RESPONSES_PATH: {"POST": handle_responses},
    "/backend-api/codex/responses/compact": {"POST": backend.handle_compact},
    "/backend-api/codex/models": {"GET": backend.handle_models},
    "/backend-api/wham/usage": {"GET": backend.handle_usage},
    "/backend-api/api/codex/usage": {"GET": backend.handle_usage},
    "/api/codex/usage": {"GET": backend.handle_usage},
    "/oauth/token": {"POST": oauth.handle_token},
    signin_http.AUTHORIZE_PATH: {"GET": signin_http.handle_authorize},
    signin_http.USERCODE_PATH: {"POST": signin_http.handle_usercode},
    signin_http.DEVICE_TOKEN_PATH: {"POST": signin_http.handle_device_token},
    signin_http.DEVICE_PAGE_PATH: {"GET": signin_http.handle_device_page},
    files.FILES_PATH: {"POST": files.handle_create},
    files.TRANSCRIBE_PATH: {"POST": files.handle_transcribe},
    files.REALTIME_CALLS_PATH: {"POST": files.handle_realtime_call},
}


class EmulatorApp:
    """Routes by exact path; anything unknown is a JSON 404."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith(control.PREFIX):
            return await control.handle_control(self.state, scope, receive, send)
        if path.startswith(files.FILES_PREFIX):
            return await files.handle_file_path(self.state, scope, receive, send)
        if path.startswith(files.UPLOAD_PREFIX) and method == "PUT":
            return await files.handle_upload(self.state, scope, receive, send)
        methods = ROUTES.get(path)
        if methods is None:
            self.state.record(method, path, status=404, now=time.time())
            return await send_rejection(send, not_found(path))
        handler = methods.get(method)
        if handler is None:
            self.state.record(method, path, status=405, now=time.time())
            return await send_rejection(send, method_not_allowed(method, path))
        await handler(self.state, scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == RESPONSES_PATH:
            return await handle_websocket(self.state, scope, receive, send)
        await receive()
        self.state.record("GET", scope["path"], transport="websocket", status=404, now=time.time())
        await deny_websocket(send, not_found(scope["path"]))


def build_emulator_app(state: EmulatorState) -> ASGIApp:
    return EmulatorApp(state)
