"""`/admin/invites`: onboarding links for a Pool (an owner: any Pool; an admin: theirs).
Create one (the link is shown once: only its digest is kept), list them with their status
(pending, used, expired, revoked), revoke a pending one. The public side is
`onboarding.py`; the rules are `pooler.store.invites`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler.admin_ui import console
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.form_once import form_once
from pooler.admin_ui.pages import db, operator_required, pool_or_404, read_form, redirect_to, render
from pooler.admin_ui.pool_overview import visible_pools
from pooler.store import invites
from pooler.store.common import ConflictError, Conn, NotFoundError
from pooler.store.invites import InviteRow
from pooler.web.quart_http import current_request

HOME = "/admin/invites"


def invite_link(token: str) -> str:
    """The link as the operator's browser reaches this console."""
    host = current_request().headers.get("host", "localhost")
    scheme = "https" if console.over_https() else "http"
    return f"{scheme}://{host}/onboarding/invites/{token}"


def invites_blueprint() -> Blueprint:
    bp = Blueprint("invites_page", __name__)

    async def listing(found: SignedIn, status: int = 200, **context: Any) -> Response:
        def load(conn: Conn) -> tuple[Any, Any]:
            return (
                invites.list_invites(conn, found.pool_ids),
                [shown.pool for shown in visible_pools(conn, found.pool_ids)],
            )

        rows, pools = await db(load)
        context.setdefault("error", None)
        context.setdefault("link", None)
        return await render("invites.html", status, invites=rows, pools=pools, **context)

    @bp.get(HOME)
    @operator_required()
    async def show(found: SignedIn) -> Response:
        return await listing(found)

    @bp.post(HOME)
    @operator_required()
    async def create(found: SignedIn) -> Response:
        form = await read_form()
        once = form_once(found, form)
        try:
            pool_id = UUID(form.get("pool"))
        except ValueError:
            return await listing(found, 400, error="Choose a Pool.")
        pool_or_404(found, pool_id)
        secret, actor = console.gateway().config.secret_key, found.operator.email

        def create_once(conn: Conn) -> tuple[str, InviteRow]:
            once.claim(conn, "invite.create")
            token, row = invites.create_invite(conn, secret, pool_id, actor=actor)
            once.made(conn, row.id)
            return token, row

        try:
            token, row = await db(create_once)
        except NotFoundError:
            raise NotFound("no such Pool") from None
        # The link is shown on this answer only: the token is kept as a digest.
        return await listing(found, link=(invite_link(token), row))

    @bp.post(f"{HOME}/<uuid:invite_id>/revoke")
    @operator_required()
    async def revoke(found: SignedIn, invite_id: UUID) -> Response:
        await read_form()
        actor = found.operator.email
        try:
            await db(
                lambda conn: invites.revoke_invite(conn, invite_id, found.pool_ids, actor=actor)
            )
        except ConflictError as exc:
            return await listing(found, 409, error=exc.message)
        return redirect_to(HOME)

    return bp
