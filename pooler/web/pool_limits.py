"""A Pool's usage as the Codex `RateLimitStatusPayload` (protocol §1.6), from the
PoolSupervisor's snapshots in memory: no upstream call, no database. Served by
`/backend-api/wham/usage` and `/v1/usage`. Also the console's count of usable accounts."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, call
from pooler.errors import ServiceUnavailable
from pooler.routing.pool_usage import pool_usage, usable_count
from pooler.routing.snapshot import AccountSnapshot

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway


async def pool_limits(gw: Gateway, pool_id: str) -> dict[str, Any]:
    """The Pool's `RateLimitStatusPayload`, from the PoolSupervisor's snapshots."""
    try:
        snapshots: list[AccountSnapshot] = await call(
            gw.pool_mailbox,
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


def usable_accounts(gw: Gateway, pool_ids: Iterable[str]) -> dict[str, int]:
    """For each Pool, how many of its accounts the router would lease now. Reads what the
    supervisor publishes (its member lists, each account's snapshot cell), as the metrics
    do: synchronous, no message, no database."""
    supervisor = gw.pool_supervisor
    accounts, now = supervisor.accounts, time.time()
    freshness = gw.instance_settings.quota_freshness_seconds
    counts: dict[str, int] = {}
    for pool_id in pool_ids:
        members = supervisor.assignments.get(pool_id, ())
        counts[pool_id] = usable_count(
            (accounts[a].snapshot for a in members if a in accounts),
            now,
            threshold=gw.pool_policy(pool_id).quota_threshold_percent,
            freshness=freshness,
        )
    return counts
