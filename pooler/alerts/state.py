"""Each Pool's state for the alert rules, read from the database in one transaction by the
leader (which may be a worker process with no account actors): the same figures the console
and the MCP tools compute from the store.

- usable accounts: the router's verdict on each member's stored snapshot (lifecycle, stored
  quota windows and credits), as `mcp.inventory_state.stored_live` and the overview's
  `pool_figures` count them (live circuits and in-flight caps are per node and not seen);
- accounts needing a new login: members whose lifecycle is `reauth_required`;
- quota windows: each window's Pool-wide used percent and reset, as `/wham/usage` reports
  them (`routing.pool_usage`);
- the error rate: the request log's last 5 minutes, errors by `request_is_error()`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Final
from uuid import UUID

from pooler.admin_ui.overview_figures import members_of, pool_figures
from pooler.admin_ui.upstream_view import load_accounts
from pooler.alerts.rules import PoolState, WindowUse
from pooler.mcp.inventory_state import stored_live, stored_snapshot
from pooler.routing.pool_usage import pool_usage
from pooler.store import quota as quota_store
from pooler.store.common import Conn
from pooler.store.instance_settings import get_instance_settings
from pooler.store.overview import PoolActivity
from pooler.store.pools import list_pools

ERROR_WINDOW: Final = timedelta(minutes=5)
REAUTH: Final = "reauth_required"

_ERRORS_SQL: Final = """
SELECT s.pool_id, c.requests, c.errors
FROM unnest(%(ids)s::uuid[]) AS s (pool_id)
CROSS JOIN LATERAL (
    SELECT count(*) AS requests,
           count(*) FILTER (WHERE request_is_error(status_code, outcome)) AS errors
    FROM request_logs
    WHERE pool_id = s.pool_id AND created_at >= now() - %(window)s
) c
"""


def error_counts(conn: Conn, pool_ids: Sequence[UUID]) -> dict[UUID, tuple[int, int]]:
    """Per Pool: (requests, errors) over the last `ERROR_WINDOW`, every node's rows."""
    if not pool_ids:
        return {}
    rows = conn.execute(_ERRORS_SQL, {"ids": list(pool_ids), "window": ERROR_WINDOW})
    return {pool_id: (int(requests), int(errors)) for pool_id, requests, errors in rows}


def pool_states(
    conn: Conn, pool_ids: frozenset[UUID], now: float | None = None
) -> dict[UUID, PoolState]:
    """The state of each active Pool among `pool_ids` (a disabled Pool has none: its rules
    hold for nothing)."""
    moment = time.time() if now is None else now
    pools = {p.id: p for p in list_pools(conn) if p.id in pool_ids and p.status == "active"}
    if not pools:
        return {}
    accounts = load_accounts(conn, frozenset(pools))
    live = stored_live(conn, accounts, pools, moment)
    quota = quota_store.load_quota(conn, [a.id for a in accounts])
    freshness = get_instance_settings(conn)[1].quota_freshness_seconds
    errors = error_counts(conn, list(pools))
    out: dict[UUID, PoolState] = {}
    for pool in pools.values():
        members = members_of(pool, accounts)
        figures, _ = pool_figures(pool, members, live, PoolActivity(), 0, moment)
        usage = pool_usage(
            [stored_snapshot(a, quota.get(a.id)) for a in members],
            moment,
            threshold=float(pool.quota_threshold_percent),
            freshness=freshness,
        )
        requests, failed = errors.get(pool.id, (0, 0))
        out[pool.id] = PoolState(
            pool.id,
            pool.name,
            accounts=len(members),
            usable=figures.usable or 0,
            reauth=tuple((a.id, a.label) for a in members if a.lifecycle == REAUTH),
            windows=_windows(usage),
            requests=requests,
            errors=failed,
        )
    return out


def _windows(usage: dict[str, object]) -> dict[str, WindowUse]:
    limits = usage.get("rate_limit")
    out: dict[str, WindowUse] = {}
    if not isinstance(limits, dict):
        return out
    for kind in ("primary", "secondary"):
        window = limits.get(f"{kind}_window")
        if isinstance(window, dict):
            out[kind] = WindowUse(float(window["used_percent"]), float(window["reset_at"]))
    return out
