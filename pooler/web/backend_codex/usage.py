"""GET /backend-api/wham/usage (and /wham/usage, /api/codex/usage): the Pool's usage.

Answered from memory, in the Codex `RateLimitStatusPayload` shape (protocol §1.6), over the
key's Pool's accounts as the PoolSupervisor knows them: no upstream call, no database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, call
from pooler.errors import PoolerError, ServiceUnavailable
from pooler.routing.pool_usage import pool_usage
from pooler.routing.snapshot import AccountSnapshot
from pooler.web.asgi import Receive, Scope, Send, header, send_error, send_json

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


async def pool_limits(gw: Gateway, pool_id: str) -> dict[str, Any]:
    """The Pool's `RateLimitStatusPayload`, from the PoolSupervisor's snapshots."""
    try:
        snapshots: list[AccountSnapshot] = await call(
            gw.supervisor,
            lambda reply: m.PoolSnapshots(pool_id, reply),
            timeout=gw.settings.lease_timeout_s,
        )
    except (CallTimeout, ActorDead) as exc:
        raise ServiceUnavailable("the account supervisor is not answering") from exc
    return pool_usage(
        snapshots,
        time.time(),
        threshold=gw.pool_policy(pool_id).quota_threshold_percent,
        freshness=gw.instance_settings.quota_freshness_seconds,
    )
