"""What the Pools page shows of each Pool from the database: its settings, its active
account assignments and keys, and its requests in the last hour (one query over the
`(pool_id, created_at)` / `created_at` indexes for every Pool shown). Usable accounts come
from the gateway's memory instead (`pooler.web.pool_limits.usable_accounts`)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import Conn
from pooler.store.models import Pool
from pooler.store.pools import POOL_COLUMNS


@dataclass(frozen=True, slots=True)
class PoolFigures:
    pool: Pool
    accounts: int  # active assignments
    keys: int  # active API keys
    requests_last_hour: int
    usable: int | None = None  # from the gateway; None until asked


def visible_pools(conn: Conn, pool_ids: frozenset[UUID] | None) -> list[PoolFigures]:
    """Every Pool (`pool_ids` None: an owner) or those of `pool_ids`, by name, with their
    figures."""
    scope = list(pool_ids) if pool_ids is not None else None
    cur = conn.cursor(row_factory=class_row(Pool))
    found = cur.execute(
        f"SELECT {POOL_COLUMNS} FROM pools"
        " WHERE %(scope)s::uuid[] IS NULL OR id = ANY(%(scope)s::uuid[]) ORDER BY name",
        {"scope": scope},
    ).fetchall()
    if not found:
        return []
    ids = [pool.id for pool in found]
    accounts = dict(
        conn.execute(
            "SELECT pool_id, count(*) FROM pool_assignments"
            " WHERE pool_id = ANY(%s) AND status = 'active' GROUP BY pool_id",
            (ids,),
        ).fetchall()
    )
    keys = dict(
        conn.execute(
            "SELECT pool_id, count(*) FROM pool_api_keys"
            " WHERE pool_id = ANY(%s) AND status = 'active' GROUP BY pool_id",
            (ids,),
        ).fetchall()
    )
    requests = requests_last_hour(conn, None if pool_ids is None else ids)
    return [
        PoolFigures(pool, accounts.get(pool.id, 0), keys.get(pool.id, 0), requests.get(pool.id, 0))
        for pool in found
    ]


def requests_last_hour(conn: Conn, pool_ids: list[UUID] | None) -> dict[UUID, int]:
    """Requests logged in the last hour, by Pool: for every Pool (None) or those given."""
    rows = conn.execute(
        "SELECT pool_id, count(*) FROM request_logs"
        " WHERE created_at >= now() - interval '1 hour'"
        " AND (%(ids)s::uuid[] IS NULL OR pool_id = ANY(%(ids)s::uuid[]))"
        " AND pool_id IS NOT NULL GROUP BY pool_id",
        {"ids": pool_ids},
    ).fetchall()
    return {pool_id: count for pool_id, count in rows}
