"""The ingress allowlist (`ingress.allowlist`): which client addresses may use the runtime
routes (`/backend-api`, `/v1`, the other Codex paths, every websocket) and `/mcp`.

Checked first thing in the app (`GatewayApp.asgi_app`), before any body is read or any key
looked up: a refused HTTP request gets 403 `access_denied` in the OpenAI shape (a JSON-RPC
error on `/mcp`), a websocket the same 403 before it is accepted. `/healthz`, `/readyz`,
`/metrics` and the console's pages are never refused here (the console has its own
sign-in; probes and scrapers come from the cluster). The client's address is resolved by
`pooler.web.forwarded` under the same rules the request log and the console use.

Cheap on the hot path: an empty allowlist costs one attribute read; otherwise the rules are
parsed once per settings snapshot (`pooler.web.ingress_rules`) and a check is one address
parse and a scan of a tuple of networks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pooler.admin_ui.errors import is_console_path
from pooler.errors import AccessDenied
from pooler.instance_settings import InstanceSettings
from pooler.mcp.endpoint import refuse as refuse_mcp
from pooler.mcp.wire import Refusal
from pooler.web.asgi import Receive, Scope, Send, send_error
from pooler.web.backend_codex.responses_ws import refuse as refuse_websocket
from pooler.web.forwarded import client_address_of
from pooler.web.ingress_rules import rules_for

# The label values of codex_pooler_ingress_denied_total{scope}.
SCOPES: Final = ("runtime", "websocket", "mcp")
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
DENIED_MESSAGE: Final = "client IP is not allowed"
MCP_DENIED: Final = Refusal(403, DENIED_MESSAGE)


def guarded_scope(scope: Scope) -> str | None:
    """Which allowlist scope a request falls in, or None when the allowlist does not apply."""
    if scope["type"] == "websocket":
        return "websocket"
    path = scope["path"]
    if path == "/mcp":
        return "mcp"
    if path in OPEN_PATHS or is_console_path(path):
        return None
    return "runtime"


class Ingress:
    """The allowlist gate and its denial counts (for /metrics)."""

    def __init__(self) -> None:
        self.denied: Counter[str] = Counter({scope: 0 for scope in SCOPES})

    async def admit(
        self, settings: InstanceSettings, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Whether the request may go on; when not, it has been answered here."""
        if not settings.ingress.allowlist:
            return True
        rules = rules_for(settings)
        which = guarded_scope(scope)
        if which is None or rules.allows(client_address_of(scope, rules.client)):
            return True
        self.denied[which] += 1
        await deny(which, scope, receive, send)
        return False


async def deny(which: str, scope: Scope, receive: Receive, send: Send) -> None:
    error = AccessDenied(DENIED_MESSAGE)
    if which == "mcp":
        await refuse_mcp(send, MCP_DENIED)
    elif which == "websocket":
        await receive()  # websocket.connect: answered before it is accepted
        await refuse_websocket(scope, send, error.status, error.body_bytes(), error.headers())
    else:
        await send_error(send, error)


class IngressCollector(Collector):
    """`codex_pooler_ingress_denied_total{scope}`: requests the allowlist refused."""

    def __init__(self, ingress: Ingress) -> None:
        self._ingress = ingress

    def collect(self) -> Iterator[Any]:
        denied = CounterMetricFamily(
            "codex_pooler_ingress_denied",
            "Requests refused by the ingress allowlist, by scope (runtime, websocket, mcp)",
            labels=["scope"],
        )
        for scope in SCOPES:
            denied.add_metric([scope], self._ingress.denied[scope])
        yield denied
