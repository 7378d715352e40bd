"""`/admin/pools`, the signed-in home for now: the Pools the operator may see, with their
accounts and keys counted. (The full Pools page, with its actions, replaces this one.)"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response

from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, render
from pooler.store.common import Conn


@dataclass(frozen=True, slots=True)
class PoolRow:
    id: UUID
    name: str
    status: str
    accounts: int
    keys: int


def visible_pools(conn: Conn, pool_ids: frozenset[UUID] | None) -> list[PoolRow]:
    """Every Pool (None) or those of `pool_ids`, by name, with assigned accounts and
    active keys counted."""
    rows = conn.execute(
        "SELECT p.id, p.name, p.status,"
        " (SELECT count(*) FROM pool_assignments a WHERE a.pool_id = p.id),"
        " (SELECT count(*) FROM pool_api_keys k WHERE k.pool_id = p.id AND k.status = 'active')"
        " FROM pools p WHERE %s::uuid[] IS NULL OR p.id = ANY(%s::uuid[]) ORDER BY p.name",
        (list(pool_ids) if pool_ids is not None else None,) * 2,
    ).fetchall()
    return [PoolRow(*row) for row in rows]


def pools_home_blueprint() -> Blueprint:
    bp = Blueprint("pools_home", __name__)

    @bp.get("/admin/pools")
    @operator_required()
    async def pools(found: SignedIn) -> Response:
        rows = await db(lambda conn: visible_pools(conn, found.pool_ids))
        return await render("pools_home.html", pools=rows)

    return bp
