"""The core MCP tools: the service's status, and the Pools (list, one) with the figures
the console's Pools page shows (`pooler.admin_ui.pool_overview.visible_pools`; usable
accounts from the gateway's memory, `pooler.web.pool_limits.usable_accounts`)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pooler.admin_ui.pool_overview import PoolFigures, visible_pools
from pooler.mcp.masking import mask_email
from pooler.mcp.tool import DEFAULT_LIMIT, MAX_LIMIT, McpCaller, ToolRefusal, ToolSpec
from pooler.store.common import Conn

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

PROCESS_STARTED: Final = time.time()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- service_status --------------------------------------------------------------------


class NoArguments(Strict):
    pass


class ServiceStatus(Strict):
    service: str
    version: str
    uptime_seconds: int
    nodes: int | None = Field(description="gateway nodes sharing the database, if known")
    caller: str = Field(description="the token's operator, masked")
    role: Literal["owner", "admin"]
    pools: int
    accounts: int
    active_keys: int
    instance_mcp_enabled: bool
    operator_mcp_enabled: bool
    tools: int


def service_status(conn: Conn, caller: McpCaller, args: NoArguments) -> ServiceStatus:
    from pooler.mcp.registry import ALL_TOOLS
    from pooler.mcp.server import package_version

    scope = None if caller.pool_ids is None else list(caller.pool_ids)
    row = conn.execute(
        "SELECT"
        " (SELECT count(*) FROM pools WHERE %(s)s::uuid[] IS NULL OR id = ANY(%(s)s::uuid[])),"
        " (SELECT count(DISTINCT a.id) FROM upstream_accounts a WHERE %(s)s::uuid[] IS NULL"
        "   OR EXISTS (SELECT 1 FROM pool_assignments p WHERE p.account_id = a.id"
        "              AND p.pool_id = ANY(%(s)s::uuid[]))),"
        " (SELECT count(*) FROM pool_api_keys WHERE status = 'active'"
        "   AND (%(s)s::uuid[] IS NULL OR pool_id = ANY(%(s)s::uuid[])))",
        {"s": scope},
    ).fetchone()
    assert row is not None
    tools = [t for t in ALL_TOOLS if caller.is_owner or not t.owner_only]
    return ServiceStatus(
        service="codex-pooler",
        version=package_version(),
        uptime_seconds=int(time.time() - PROCESS_STARTED),
        nodes=None,
        caller=mask_email(caller.email) or "***",
        role="owner" if caller.is_owner else "admin",
        pools=row[0],
        accounts=row[1],
        active_keys=row[2],
        # A call reaches a tool only through both gates.
        instance_mcp_enabled=True,
        operator_mcp_enabled=True,
        tools=len(tools),
    )


def status_summary(out: ServiceStatus) -> str:
    return (
        f"Codex Pooler {out.version}, up {out.uptime_seconds} s; {out.caller} ({out.role})"
        f" sees {out.pools} Pool(s), {out.accounts} account(s), {out.active_keys} active key(s)."
    )


# --- list_pools / get_pool -------------------------------------------------------------


class PoolPolicy(Strict):
    strategy: str
    quota_threshold_percent: float
    retry_budget: int
    max_in_flight_per_account: int
    continuity_enabled: bool
    v1_enabled: bool


class PoolInfo(Strict):
    id: UUID
    name: str
    status: str
    policy: PoolPolicy
    accounts: int = Field(description="active account assignments")
    usable_accounts: int | None = Field(description="accounts the router would lease now")
    active_keys: int
    requests_last_hour: int
    created_at: datetime


class ListPoolsInput(Strict):
    query: str | None = Field(None, max_length=64, description="part of the Pool's name")
    status: Literal["active", "disabled"] | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class PoolList(Strict):
    pools: list[PoolInfo]
    total: int = Field(description="Pools matching, before the limit")
    truncated: bool


class GetPoolInput(Strict):
    pool: str = Field(min_length=1, max_length=100, description="the Pool's id or name")


def pool_info(figures: PoolFigures) -> PoolInfo:
    pool = figures.pool
    return PoolInfo(
        id=pool.id,
        name=pool.name,
        status=pool.status,
        policy=PoolPolicy(
            strategy=pool.strategy,
            quota_threshold_percent=pool.quota_threshold_percent,
            retry_budget=pool.retry_budget,
            max_in_flight_per_account=pool.max_in_flight_per_account,
            continuity_enabled=pool.continuity_enabled,
            v1_enabled=pool.v1_enabled,
        ),
        accounts=figures.accounts,
        usable_accounts=None,
        active_keys=figures.keys,
        requests_last_hour=figures.requests_last_hour,
        created_at=pool.created_at,
    )


def list_pools(conn: Conn, caller: McpCaller, args: ListPoolsInput) -> PoolList:
    rows = [
        row
        for row in visible_pools(conn, caller.pool_ids)
        if (args.status is None or row.pool.status == args.status)
        and (args.query is None or args.query.lower() in row.pool.name.lower())
    ]
    shown = rows[: args.limit]
    return PoolList(
        pools=[pool_info(r) for r in shown], total=len(rows), truncated=len(rows) > len(shown)
    )


def get_pool(conn: Conn, caller: McpCaller, args: GetPoolInput) -> PoolInfo:
    wanted = args.pool.strip()
    for row in visible_pools(conn, caller.pool_ids):
        if str(row.pool.id) == wanted.lower() or row.pool.name == wanted:
            return pool_info(row)
    raise ToolRefusal(f"no such Pool: {wanted[:100]}")


async def with_usable(gateway: Gateway, caller: McpCaller, out: Any) -> Any:
    from pooler.web.pool_limits import usable_accounts

    pools = out.pools if isinstance(out, PoolList) else [out]
    usable = usable_accounts(gateway, [str(p.id) for p in pools])
    for pool in pools:
        pool.usable_accounts = usable.get(str(pool.id))
    return out


def pools_summary(out: PoolList) -> str:
    lines = [f"{len(out.pools)} of {out.total} Pool(s):"]
    lines += [pool_line(p) for p in out.pools]
    return "\n".join(lines)


def pool_line(p: PoolInfo) -> str:
    usable = "?" if p.usable_accounts is None else str(p.usable_accounts)
    return (
        f"- {p.name} ({p.status}, {p.policy.strategy}): {usable}/{p.accounts} accounts usable,"
        f" {p.active_keys} key(s), {p.requests_last_hour} request(s) in the last hour"
    )


TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="service_status",
        title="Service status",
        description="This Codex Pooler's version and uptime, who the token speaks for, the"
        " Pools, accounts and keys it can see, and the MCP gates.",
        input_model=NoArguments,
        output_model=ServiceStatus,
        run=service_status,
        summary=status_summary,
    ),
    ToolSpec(
        name="list_pools",
        title="List Pools",
        description="The Pools the caller can see, by name: status, routing policy,"
        " usable/total accounts, active keys and requests in the last hour.",
        input_model=ListPoolsInput,
        output_model=PoolList,
        run=list_pools,
        summary=pools_summary,
        enrich=with_usable,
    ),
    ToolSpec(
        name="get_pool",
        title="Get a Pool",
        description="One Pool by id or name: status, routing policy, usable/total accounts,"
        " active keys and requests in the last hour.",
        input_model=GetPoolInput,
        output_model=PoolInfo,
        run=get_pool,
        summary=pool_line,
        enrich=with_usable,
    ),
]
