"""GET /backend-api/wham/usage (and /wham/usage, /api/codex/usage): the Pool's usage.

Answered from memory (pooler/web/pool_limits.py), over the key's Pool's accounts as the
PoolSupervisor knows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pooler.web.asgi import header
from pooler.web.pool_limits import pool_limits
from pooler.web.quart_http import json_response

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest


class UsageRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest) -> Response:
        _, pool = self.gw.keys.authenticate(header(request.scope, b"authorization"))
        payload = await pool_limits(self.gw, pool.pool_id)
        return json_response(payload, 200, [("cache-control", "no-store")])
