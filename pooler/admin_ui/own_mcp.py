"""The "MCP access" section of `/admin/settings`: the signed-in operator's own MCP switch
(`pooler admin operator mcp on|off`), and its own MCP tokens for `/mcp` (list, create:
the raw token shown once with the Codex CLI snippet, delete). Another operator's token id
is a 404 and changes nothing. The instance's gate (`mcp.enabled`) is only shown here: the
owner sets it on the System page. The routes are added to the settings page's blueprint
(`add_mcp_routes`), which renders the section.

Every change goes through `pooler.store.mcp_tokens`, as the CLI does, and is audited there
with the operator as actor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import BadRequest, NotFound

from pooler import client_snippets
from pooler.admin_ui import console
from pooler.admin_ui.api_keys import gateway_url
from pooler.admin_ui.api_keys_view import parse_uuid
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.form_once import form_once
from pooler.admin_ui.pages import db, operator_required, read_form, redirect_to, render
from pooler.store import mcp_tokens
from pooler.store.common import Conn, NotFoundError, StoreError
from pooler.store.models import McpToken

SECTION: Final = "/admin/settings#mcp"
BASE: Final = "/admin/settings/mcp"


@dataclass(frozen=True, slots=True)
class McpView:
    """What the section shows: both gates and the operator's own tokens."""

    instance_enabled: bool
    operator_enabled: bool
    tokens: list[McpToken]


def mcp_view(conn: Conn, operator_id: UUID, instance_enabled: bool) -> McpView:
    return McpView(
        instance_enabled,
        mcp_tokens.operator_mcp_enabled(conn, operator_id),
        mcp_tokens.operator_tokens(conn, operator_id),
    )


def instance_enabled() -> bool:
    """The instance's gate as this node's `/mcp` applies it."""
    return console.gateway().instance_settings.mcp.enabled


Page = Callable[..., Awaitable[Response]]


def add_mcp_routes(bp: Blueprint, page: Page) -> None:
    """The section's POST routes on the settings page's blueprint; `page(found, status,
    error=...)` renders the settings page (a refused token name is shown there)."""

    @bp.post(f"{BASE}/switch")
    @operator_required()
    async def mcp_switch(found: SignedIn) -> Response:
        form = await read_form()
        state = form.get("state")
        if state not in ("on", "off"):
            raise BadRequest("choose on or off")
        email, enabled = found.operator.email, state == "on"
        await db(lambda conn: mcp_tokens.set_operator_mcp(conn, email, enabled, actor=email))
        return redirect_to(SECTION)

    @bp.post(f"{BASE}/tokens")
    @operator_required()
    async def mcp_token_create(found: SignedIn) -> Response:
        form = await read_form()
        once = form_once(found, form)
        name = form.get("name").strip()
        secret, email = console.gateway().config.secret_key, found.operator.email

        def make(conn: Conn) -> tuple[str, McpToken]:
            once.claim(conn, "mcp_token.create")
            raw, token = mcp_tokens.create_mcp_token(conn, secret, email, name, actor=email)
            once.made(conn, token.id)
            return raw, token

        try:
            raw, token = await db(make)
        except StoreError as exc:  # a refused name: the claim rolled back with it
            return await page(found, 400, error=exc.message, mcp_name=name)
        url = gateway_url()
        response = await render(
            "mcp_token_secret.html",
            token=token,
            raw_token=raw,
            snippets=client_snippets.codex_mcp(url, raw),
            instance_enabled=instance_enabled(),
            operator_enabled=await db(
                lambda conn: mcp_tokens.operator_mcp_enabled(conn, found.operator.id)
            ),
        )
        response.headers["cache-control"] = "no-store"
        return response

    @bp.post(f"{BASE}/tokens/<token_id>/delete")
    @operator_required()
    async def mcp_token_delete(found: SignedIn, token_id: str) -> Response:
        ident = parse_uuid(token_id)
        if ident is None:
            raise NotFound()
        await read_form()
        operator_id, email = found.operator.id, found.operator.email
        try:
            await db(
                lambda conn: mcp_tokens.delete_own_mcp_token(conn, operator_id, ident, actor=email)
            )
        except NotFoundError:
            raise NotFound() from None
        return redirect_to(SECTION)
