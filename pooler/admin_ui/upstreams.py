"""`/admin/upstreams` and `/admin/upstreams/{id}`: the upstream accounts of the operator's
Pools, with their live state and the router's verdict, and the actions on one account:
pause, resume, refresh the tokens now, re-link (a new sign-in: `upstream_add`), delete,
assign to a Pool with a weight and unassign. Every change goes through the store function
the CLI calls, which audits it.

An admin sees and acts on the accounts assigned (in any status) to one of their Pools, and
only those Pools' assignments; another account is a 404 and nothing changes. Deleting an
account removes it from every Pool, so an admin may delete only an account none of whose
Pools is out of their reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final
from uuid import UUID

import httpx
from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import Forbidden, NotFound

from pooler.admin_ui import console
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import (
    db,
    operator_required,
    pool_or_404,
    read_form,
    redirect_to,
    render,
)
from pooler.admin_ui.upstream_view import AccountRow, live_state, load_accounts, other_pools
from pooler.store import accounts, pools, refresh
from pooler.store.common import Conn, InvalidInputError, StoreError

HOME: Final = "/admin/upstreams"
REFRESH_TIMEOUT_S: Final = 10.0  # one OAuth request, as the CLI's


def visible_account(conn: Conn, found: SignedIn, account_id: UUID) -> AccountRow:
    """The account if the operator may see it; NotFound otherwise (as if it did not exist)."""
    rows = load_accounts(conn, found.pool_ids, account_id)
    if not rows:
        raise NotFound("no such account")
    return rows[0]


def pool_name_of(conn: Conn, found: SignedIn, raw_pool_id: str) -> str:
    """The name of the Pool the form names, if the operator may see it (404 otherwise)."""
    try:
        pool_id = UUID(raw_pool_id)
    except ValueError:
        raise NotFound("no such Pool") from None
    pool_or_404(found, pool_id)
    row = conn.execute("SELECT name FROM pools WHERE id = %s", (pool_id,)).fetchone()
    if row is None:
        raise NotFound("no such Pool")
    return str(row[0])


def parse_weight(raw: str) -> int:
    try:
        return int(raw.strip() or "1")
    except ValueError:
        raise InvalidInputError("the weight is a whole number between 0 and 1000000") from None


def upstreams_blueprint() -> Blueprint:
    bp = Blueprint("upstreams", __name__)

    @bp.get(HOME)
    @operator_required()
    async def index(found: SignedIn) -> Response:
        rows, choices = await db(
            lambda conn: (load_accounts(conn, found.pool_ids), other_pools(conn, found.pool_ids))
        )
        live = await live_state(console.gateway(), rows)
        return await render("upstreams.html", accounts=rows, live=live, pools=choices)

    async def detail(
        found: SignedIn,
        account_id: UUID,
        status: int = 200,
        error: str | None = None,
        notice: str | None = None,
    ) -> Response:
        account, choices = await db(
            lambda conn: (
                visible_account(conn, found, account_id),
                other_pools(conn, found.pool_ids),
            )
        )
        live = (await live_state(console.gateway(), [account]))[account.id]
        return await render(
            "upstream.html",
            status,
            account=account,
            live=live,
            circuits=live.circuits(time.time()),
            pools=choices,
            error=error,
            notice=notice,
        )

    @bp.get(f"{HOME}/<uuid:account_id>")
    @operator_required()
    async def show(found: SignedIn, account_id: UUID) -> Response:
        return await detail(found, account_id)

    @bp.post(f"{HOME}/<uuid:account_id>/pause")
    @operator_required()
    async def pause(found: SignedIn, account_id: UUID) -> Response:
        form = await read_form()
        reason = form.get("reason").strip() or None

        def change(conn: Conn) -> None:
            visible_account(conn, found, account_id)
            accounts.pause_account(conn, account_id, reason, actor=found.operator.email)

        return await act(found, account_id, change)

    @bp.post(f"{HOME}/<uuid:account_id>/resume")
    @operator_required()
    async def resume(found: SignedIn, account_id: UUID) -> Response:
        await read_form()

        def change(conn: Conn) -> None:
            visible_account(conn, found, account_id)
            accounts.resume_account(conn, account_id, actor=found.operator.email)

        return await act(found, account_id, change)

    @bp.post(f"{HOME}/<uuid:account_id>/refresh")
    @operator_required()
    async def refresh_now(found: SignedIn, account_id: UUID) -> Response:
        await read_form()
        gw = console.gateway()

        # The same path as `pooler admin account refresh`: the stored tokens are rotated
        # under the account's refresh lock and announced on the tokens channel, from which
        # the running account actor reloads them.
        def change(conn: Conn) -> refresh.RefreshOutcome:
            visible_account(conn, found, account_id)
            with httpx.Client(timeout=REFRESH_TIMEOUT_S) as http:
                return refresh.refresh_account_now(
                    conn,
                    gw.keyring,
                    http,
                    gw.config.auth_base_url,
                    account_id,
                    actor=found.operator.email,
                )

        try:
            outcome = await db(change)
        except StoreError as exc:
            return await detail(found, account_id, 409, error=exc.message)
        if outcome.permanent:
            return await detail(
                found,
                account_id,
                409,
                error=f"The auth server refused the refresh ({outcome.error}): the account"
                " now needs a new sign-in. Re-link it.",
            )
        if outcome.error is not None:
            return await detail(
                found,
                account_id,
                502,
                error=f"The refresh failed ({outcome.error}); try again later.",
            )
        return await detail(found, account_id, notice="Tokens refreshed.")

    @bp.get(f"{HOME}/<uuid:account_id>/delete")
    @operator_required()
    async def confirm_delete(found: SignedIn, account_id: UUID) -> Response:
        account = await db(lambda conn: deletable(conn, found, account_id))
        return await render("upstream_delete.html", account=account)

    @bp.post(f"{HOME}/<uuid:account_id>/delete")
    @operator_required()
    async def delete(found: SignedIn, account_id: UUID) -> Response:
        await read_form()

        def change(conn: Conn) -> None:
            deletable(conn, found, account_id)
            accounts.delete_account(conn, account_id, actor=found.operator.email)

        await db(change)
        return redirect_to(HOME)

    @bp.post(f"{HOME}/<uuid:account_id>/assign")
    @operator_required()
    async def assign(found: SignedIn, account_id: UUID) -> Response:
        form = await read_form()

        def change(conn: Conn) -> None:
            visible_account(conn, found, account_id)
            name = pool_name_of(conn, found, form.get("pool"))
            pools.set_assignment(
                conn,
                name,
                account_id,
                status="active",
                weight=parse_weight(form.get("weight")),
                actor=found.operator.email,
            )

        return await act(found, account_id, change)

    @bp.post(f"{HOME}/<uuid:account_id>/unassign")
    @operator_required()
    async def unassign(found: SignedIn, account_id: UUID) -> Response:
        form = await read_form()

        def change(conn: Conn) -> None:
            visible_account(conn, found, account_id)
            name = pool_name_of(conn, found, form.get("pool"))
            pools.set_assignment(
                conn, name, account_id, status="disabled", actor=found.operator.email
            )

        return await act(found, account_id, change)

    async def act(found: SignedIn, account_id: UUID, change: Callable[[Conn], None]) -> Response:
        try:
            await db(change)
        except StoreError as exc:
            return await detail(found, account_id, 400, error=exc.message)
        return redirect_to(f"{HOME}/{account_id}")

    return bp


def deletable(conn: Conn, found: SignedIn, account_id: UUID) -> AccountRow:
    """The account, if the operator may delete it: it is visible, and (for an admin) none
    of its Pools is one they cannot see."""
    account = visible_account(conn, found, account_id)
    if found.pool_ids is not None:
        elsewhere = conn.execute(
            "SELECT 1 FROM pool_assignments WHERE account_id = %s AND NOT (pool_id = ANY(%s))"
            " LIMIT 1",
            (account_id, list(found.pool_ids)),
        ).fetchone()
        if elsewhere is not None:
            raise Forbidden(
                "this account also serves a Pool you do not administer: unassign it from"
                " your Pools instead, or ask the owner"
            )
    return account
