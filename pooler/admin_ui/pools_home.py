"""`/admin/pools`: the Pools the operator may see (an owner: all; an
admin: those assigned) with their figures, and each Pool's page: its routing policy
(strategy, quota threshold, retry budget, in-flight cap, continuity, the `/v1` switch),
enable/disable, and delete. Creating and deleting a Pool is the owner's.

Every change goes through `pooler.store.pools` (the CLI's functions: same rules, audited,
announced on NOTIFY so running gateways reload within a second)."""

from __future__ import annotations

import dataclasses
from typing import Any, Final
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import Forbidden, NotFound

from pooler.admin_ui import console
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import (
    db,
    in_words,
    operator_required,
    pool_or_404,
    read_form,
    redirect_to,
    render,
)
from pooler.admin_ui.pool_form import NEW_POOL, NUMBERS, STRATEGY_LABELS, read_policy, values_of
from pooler.admin_ui.pool_overview import PoolFigures, visible_pools
from pooler.store import pools
from pooler.store.common import ConflictError, Conn, StoreError
from pooler.web.pool_limits import usable_accounts

HOME = "/admin/pools"
FORM_ERROR = "form"  # a refusal tied to no one field
NOT_CONFIRMED: Final = "Type the Pool's name exactly as shown to delete it."


def with_usable(rows: list[PoolFigures]) -> list[PoolFigures]:
    """`rows` with their usable accounts, from the gateway's memory."""
    usable = usable_accounts(console.gateway(), [str(row.pool.id) for row in rows])
    return [dataclasses.replace(row, usable=usable.get(str(row.pool.id))) for row in rows]


FIELD_LABELS: Final = {name: label for name, label, _ in NUMBERS}


def refusal(exc: StoreError) -> dict[str, str]:
    if exc.param is None:
        return {FORM_ERROR: exc.message}
    return {exc.param: in_words(exc.message, exc.param, FIELD_LABELS.get(exc.param, exc.param))}


def pools_home_blueprint() -> Blueprint:
    bp = Blueprint("pools_home", __name__)
    common = {"strategies": pools.STRATEGIES, "strategy_labels": STRATEGY_LABELS}

    async def list_page(found: SignedIn, status: int = 200, **context: Any) -> Response:
        rows = await db(lambda conn: visible_pools(conn, found.pool_ids))
        context.setdefault("values", dict(NEW_POOL))
        context.setdefault("errors", {})
        return await render("pools.html", status, pools=with_usable(rows), **common, **context)

    async def pool_page(
        found: SignedIn, pool_id: UUID, status: int = 200, **context: Any
    ) -> Response:
        rows = await db(lambda conn: visible_pools(conn, frozenset({pool_id})))
        if not rows:
            raise NotFound("no such Pool")
        (row,) = with_usable(rows)
        context.setdefault("values", values_of(row.pool))
        context.setdefault("errors", {})
        context.setdefault("delete_error", None)
        context.setdefault("confirm_error", None)
        context.setdefault("confirm_typed", "")
        return await render("pool_detail.html", status, row=row, **common, **context)

    @bp.get(HOME)
    @operator_required()
    async def list_pools(found: SignedIn) -> Response:
        return await list_page(found)

    @bp.post(HOME)
    @operator_required("owner")
    async def create(found: SignedIn) -> Response:
        form = await read_form()
        name, read = form.get("name"), read_policy(form)
        values = {"name": name, **read.values}
        if read.errors:
            return await list_page(found, 400, values=values, errors=read.errors)
        try:
            pool = await db(
                lambda conn: pools.create_pool(
                    conn, name, actor=found.operator.email, **read.policy
                )
            )
        except StoreError as exc:
            return await list_page(found, 400, values=values, errors=refusal(exc))
        return redirect_to(f"{HOME}/{pool.id}")

    @bp.get(f"{HOME}/<uuid:pool_id>")
    @operator_required()
    async def show(found: SignedIn, pool_id: UUID) -> Response:
        pool_or_404(found, pool_id)
        return await pool_page(found, pool_id)

    @bp.post(f"{HOME}/<uuid:pool_id>")
    @operator_required()
    async def save_policy(found: SignedIn, pool_id: UUID) -> Response:
        form = await read_form()
        pool_or_404(found, pool_id)
        read = read_policy(form)
        if read.errors:
            return await pool_page(found, pool_id, 400, values=read.values, errors=read.errors)

        def save(conn: Conn) -> None:
            name = pools.pool_by_id(conn, pool_id).name
            pools.update_pool(conn, name, actor=found.operator.email, **read.policy)

        try:
            await db(save)
        except StoreError as exc:
            return await pool_page(found, pool_id, 400, values=read.values, errors=refusal(exc))
        return redirect_to(f"{HOME}/{pool_id}")

    @bp.post(f"{HOME}/<uuid:pool_id>/status")
    @operator_required()
    async def set_status(found: SignedIn, pool_id: UUID) -> Response:
        form = await read_form()
        pool_or_404(found, pool_id)
        status = form.get("status")

        def save(conn: Conn) -> None:
            name = pools.pool_by_id(conn, pool_id).name
            pools.update_pool(conn, name, status=status, actor=found.operator.email)

        try:
            await db(save)
        except StoreError as exc:
            return await pool_page(found, pool_id, 400, errors={FORM_ERROR: exc.message})
        return redirect_to(f"{HOME}/{pool_id}")

    @bp.post(f"{HOME}/<uuid:pool_id>/delete")
    @operator_required()
    async def delete(found: SignedIn, pool_id: UUID) -> Response:
        form = await read_form()
        pool_or_404(found, pool_id)  # another's Pool is a 404 even to the owner-only action
        if not found.is_owner:
            raise Forbidden("only the instance owner deletes a Pool")
        typed = form.get("confirm_name")

        def remove(conn: Conn) -> bool:
            name = pools.pool_by_id(conn, pool_id).name
            if typed != name:
                return False
            pools.delete_pool(conn, name, actor=found.operator.email)
            return True

        try:
            if not await db(remove):
                return await pool_page(
                    found, pool_id, 400, confirm_error=NOT_CONFIRMED, confirm_typed=typed
                )
        except ConflictError as exc:
            return await pool_page(found, pool_id, 409, delete_error=exc.message)
        return redirect_to(f"{HOME}?deleted=1#main")

    return bp
