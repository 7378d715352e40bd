"""What a process runs, by its role (`CODEX_POOLER_ROLE`): pure, no I/O.

    role        HTTP                                   per-node actors and jobs    cluster jobs
    all         every route (gateway, console, /mcp)   yes                         if leader
    web         every route (gateway, console, /mcp)   yes                         never
    worker      /healthz, /readyz, /metrics only       no                          if leader
    scheduler   /healthz, /readyz, /metrics only       no                          if leader

Per-node (each serving process needs its own, for the state it holds in memory): the
PoolSupervisor and its account actors (which poll usage and refresh tokens ahead of expiry
for the accounts this node routes to), the LogWriter, the LISTEN connection, and the jobs
`usage_tick`, `write_behind` (quota evidence and conversation pins), `model_catalog` and
`heap_trim`. A `worker` or `scheduler` serves no client, so it has none of them.

Once per cluster (only the leader, `pooler.actors.leader`, runs them): `stats_rollup` and
`stats_rollup_late`, and the cluster-wide jobs added later (retention, pricing refresh,
alert evaluation). `worker` and `scheduler` are the same today: both take part in the
election, so either kind of node (or an `all` node) may lead.
"""

from __future__ import annotations

from typing import Final

ROLES: Final = ("all", "web", "worker", "scheduler")


def serves_gateway(role: str) -> bool:
    """Does the process serve the gateway's routes (and need its per-node actors)?"""
    return role in ("all", "web")


def may_lead(role: str) -> bool:
    """Does the process take part in the election for the once-per-cluster jobs?"""
    return role != "web"
