"""The page decorator's role and Pool scoping, on probe pages mounted in a console like the
gateway's own: an owner-only page refuses an admin (403), and a Pool page refuses a Pool
not assigned to the admin (404) before the handler changes anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, csrf_of, sign_in
from harness import Stack, open_stack
from hypercorn.trio import serve
from quart import Blueprint
from quart.wrappers import Response

from pooler import store
from pooler.admin_ui import PAGES, console_blueprint
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, pool_or_404, read_form, render
from pooler.serving import bound_port, hypercorn_config
from pooler.store import operators
from pooler.web.app import GatewayApp, install_error_handlers

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"


def probe_pages() -> Blueprint:
    bp = Blueprint("probe", __name__)

    @bp.get("/admin/probe/owner")
    @operator_required("owner")
    async def owner_only(found: SignedIn) -> Response:
        return await render("error.html", title="Owner page", message="owner only", status=200)

    @bp.post("/admin/probe/pools/<uuid:pool_id>/disable")
    @operator_required()
    async def disable(found: SignedIn, pool_id: UUID) -> Response:
        await read_form()
        pool_or_404(found, pool_id)
        await db(
            lambda conn: conn.execute(
                "UPDATE pools SET status = 'disabled' WHERE id = %s", (pool_id,)
            )
        )
        return Response("disabled")

    return bp


@asynccontextmanager
async def probe_console(stack: Stack) -> AsyncIterator[str]:
    app = GatewayApp()
    app.register_blueprint(console_blueprint(stack.gateway, (*PAGES, probe_pages)))
    install_error_handlers(app)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, hypercorn_config("127.0.0.1", 0)))
        yield f"http://127.0.0.1:{bound_port(binds)}"
        nursery.cancel_scope.cancel()


async def test_roles_and_pool_scoping_of_the_page_decorator(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> tuple[UUID, UUID]:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "mine")
            theirs = store.create_pool(conn, "theirs")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            return mine.id, theirs.id

        mine, theirs = await stack.database.run(setup)
        async with probe_console(stack) as url:
            kwargs: Any = {"base_url": url, "follow_redirects": False, "timeout": 30}
            async with httpx.AsyncClient(**kwargs) as admin, httpx.AsyncClient(**kwargs) as owner:
                await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
                await sign_in(owner)
                refused = await admin.get("/admin/probe/owner")
                assert refused.status_code == 403 and "instance owner" in refused.text
                assert (await owner.get("/admin/probe/owner")).status_code == 200

                token = csrf_of((await admin.get("/admin/pools")).text)
                other = await admin.post(
                    f"/admin/probe/pools/{theirs}/disable", data={"csrf_token": token}
                )
                assert other.status_code == 404
                statuses = await stack.database.run(
                    lambda conn: dict(conn.execute("SELECT name, status FROM pools").fetchall())
                )
                assert statuses["theirs"] == "active"
                own = await admin.post(
                    f"/admin/probe/pools/{mine}/disable", data={"csrf_token": token}
                )
                assert own.status_code == 200
