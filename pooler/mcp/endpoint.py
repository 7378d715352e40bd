"""`/mcp`: the operator MCP endpoint, a raw ASGI handler mounted in the gateway's one app
(`GatewayApp.asgi_app`), in front of the SDK's Streamable HTTP transport.

Stateless (`stateless=True`: no session, no `Mcp-Session-Id`, nothing kept between
requests, so there is no session count or idle time to bound) and JSON responses. Before
the SDK sees a request, in this order: the head's checks (`pooler.mcp.wire`), the
instance's gate, the bearer token's shape, the call pace (`call_pace`: per token and per
process), a slot of the `mcp` bulkhead, the token and the
operator's gates (one database read), then the body, read whole within the instance's body
deadline and at most `MAX_BODY_BYTES`, and checked (JSON, one request object, not nested
past `MAX_JSON_DEPTH`). Every refusal is a JSON-RPC error with its HTTP status.

The SDK runs under Trio through anyio; its per-request server task lives in the session
manager's task group, which `run` holds open for the gateway's life.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from pooler.errors import ServerOverloaded
from pooler.mcp.call_pace import MAX_WAIT_S, CallPace
from pooler.mcp.gates import INSTANCE_OFF, bearer_token, caller_of
from pooler.mcp.server import CALLER_KEY, build_server
from pooler.mcp.wire import (
    ALLOW,
    INVALID_REQUEST,
    MAX_BODY_BYTES,
    PARSE_ERROR,
    Refusal,
    head_refusal,
)
from pooler.store.mcp_tokens import token_holder
from pooler.web.asgi import Receive, Scope, Send, headers_dict

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.mcp")

MAX_JSON_DEPTH: Final = 32
HEADERS: Final = (
    b"host",
    b"origin",
    b"content-type",
    b"content-encoding",
    b"content-length",
    b"accept",
    b"authorization",
)
OVERLOADED: Final = Refusal(
    503,
    "the MCP route class is temporarily overloaded; retry shortly",
    headers=((b"retry-after", b"1"),),
)
DATABASE_DOWN: Final = Refusal(
    503, "the database is unavailable; retry shortly", headers=((b"retry-after", b"1"),)
)
TOO_FAST: Final = Refusal(
    429,
    "too many MCP calls at once; wait a moment",
    headers=((b"retry-after", str(int(MAX_WAIT_S)).encode()),),
)
TOO_LARGE: Final = Refusal(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
TOO_SLOW: Final = Refusal(408, "the request body did not arrive in time")


class McpEndpoint:
    """The ASGI handler of `/mcp` (HTTP only)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.server = build_server(gateway)
        self.pace = CallPace()
        self.sessions = StreamableHTTPSessionManager(
            self.server,
            json_response=True,
            stateless=True,
            # Host and Origin are checked here, against the operator's host names.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=MAX_BODY_BYTES,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the SDK's task group open until cancelled."""
        async with self.sessions.run():
            task_status.started()
            await trio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await send_empty(send, 204, [ALLOW])
            return
        headers = headers_dict(scope, HEADERS)
        mcp = self.gateway.instance_settings.mcp
        refusal = head_refusal(scope["method"], headers, scope["query_string"], mcp.allowed_hosts)
        if refusal is None and not mcp.enabled:
            refusal = INSTANCE_OFF
        token = bearer_token(headers.get(b"authorization")) if refusal is None else refusal
        if isinstance(token, Refusal):
            await refuse(send, token)
            return
        if not await self.pace.wait_for_slot(token):
            await refuse(send, TOO_FAST)
            return
        try:
            async with self.gateway.admission.admit("mcp"):
                await self._serve(scope, receive, send, token)
        except ServerOverloaded:
            await refuse(send, OVERLOADED)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        secret_key = self.gateway.config.secret_key
        try:
            holder = await self.gateway.db.run(lambda conn: token_holder(conn, secret_key, token))
        except Exception as exc:
            log.warning("MCP token lookup failed: %s", type(exc).__name__)
            await refuse(send, DATABASE_DOWN)
            return
        caller = caller_of(holder)
        if isinstance(caller, Refusal):
            await refuse(send, caller)
            return
        body = await read_body(receive, self.gateway.instance_settings.body_read_timeout_seconds)
        if body is None:  # the client left
            return
        refusal = body if isinstance(body, Refusal) else body_refusal(body)
        if refusal is not None:
            await refuse(send, refusal)
            return
        assert isinstance(body, bytes)
        inner = dict(scope)
        inner[CALLER_KEY] = caller
        await self.sessions.handle_request(inner, replay(body, receive), send)


async def read_body(receive: Receive, timeout_s: float) -> bytes | Refusal | None:
    """The whole body (at most MAX_BODY_BYTES, within `timeout_s`), a refusal, or None
    when the client went away."""
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout_s):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    return TOO_SLOW


def body_refusal(body: bytes) -> Refusal | None:
    """Why a body is not one JSON-RPC message the SDK should see, or None."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Refusal(400, "Parse error: the body is not JSON", PARSE_ERROR)
    if isinstance(message, list):
        return Refusal(400, "batches are not supported: send one JSON-RPC message", INVALID_REQUEST)
    if not isinstance(message, dict):
        return Refusal(400, "Invalid Request: expected a JSON-RPC object", INVALID_REQUEST)
    if too_deep(message, MAX_JSON_DEPTH):
        return Refusal(
            400, f"Invalid Request: JSON nested deeper than {MAX_JSON_DEPTH}", INVALID_REQUEST
        )
    return None


def too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then the client's own events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return receive_again


async def refuse(send: Send, refusal: Refusal) -> None:
    await send(
        {"type": "http.response.start", "status": refusal.status, "headers": refusal.all_headers()}
    )
    await send({"type": "http.response.body", "body": refusal.body(), "more_body": False})


async def send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
