"""GET /backend-api/wham/usage (and /wham/usage, /api/codex/usage): the Pool's usage.

Answered from memory (pooler/web/pool_limits.py), over the key's Pool's accounts as the
PoolSupervisor knows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pooler.errors import PoolerError
from pooler.web.asgi import Receive, Scope, Send, header, send_error, send_json
from pooler.web.pool_limits import pool_limits

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway


class UsageRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            _, pool = self.gw.keys.authenticate(header(scope, b"authorization"))
            payload = await pool_limits(self.gw, pool.pool_id)
            await send_json(send, 200, payload, [(b"cache-control", b"no-store")])
        except PoolerError as error:
            await send_error(send, error)
