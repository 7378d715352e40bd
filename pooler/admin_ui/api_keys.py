"""`/admin/api-keys`: Pool API keys for owners (every Pool) and admins (their Pools only).
List with a Pool filter; create (the raw key shown once, with the client snippets for it);
per key: edit name and policy, rotate (a new secret for the same record), pause, resume,
revoke (rotate and revoke ask to confirm first). Another Pool's key is a 404.

Every change goes through `pooler.store` (as `pooler admin key`), is audited there, and is
applied to this node's key cache before the answer (`Gateway.reload`), so an old secret is
refused as soon as the operator sees the change; other nodes follow by NOTIFY.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Final, TypeVar
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler import client_snippets
from pooler.admin_ui import console
from pooler.admin_ui.api_keys_view import (
    KeyForm,
    KeyRow,
    effort_choices,
    effort_text,
    parse_uuid,
    pool_name_of,
    scoped_key,
    visible_keys,
)
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.form_once import form_once
from pooler.admin_ui.pages import db, operator_required, read_form, redirect_to, render
from pooler.admin_ui.pool_overview import visible_pools
from pooler.store import key_lifecycle, keys
from pooler.store.common import ConflictError, Conn, NotFoundError, StoreError
from pooler.store.models import ApiKey, Pool
from pooler.web.quart_http import current_request

log = logging.getLogger("pooler.admin_ui")
T = TypeVar("T")

HOME: Final = "/admin/api-keys"
# A Host header fit to print in a snippet (the operator's own browser sent it).
HOST_RE: Final = re.compile(r"([A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?")


def gateway_url() -> str:
    """This gateway's URL as the operator's browser reached it (trusted-proxy aware)."""
    scheme = "https" if console.over_https() else "http"
    host = current_request().headers.get("host", "")
    if not HOST_RE.fullmatch(host):
        config = console.gateway().config
        host = f"{config.host}:{config.port}"
    return f"{scheme}://{host}"


async def apply_now() -> None:
    """Apply a committed key change to this node before answering; should this fail, the
    change's NOTIFY makes every node (this one too) reload shortly."""
    try:
        await console.gateway().reload()
    except Exception as exc:
        log.warning("applying a key change at once failed: %s", type(exc).__name__)


def key_id_or_404(text: str) -> UUID:
    key_id = parse_uuid(text)
    if key_id is None:
        raise NotFound()
    return key_id


def api_keys_blueprint() -> Blueprint:
    bp = Blueprint("api_keys", __name__)

    async def list_page(found: SignedIn, form: KeyForm, status: int = 200) -> Response:
        pool_filter = parse_uuid(current_request().args.get("pool", ""))
        if pool_filter is not None and not found.may_see_pool(pool_filter):
            raise NotFound()

        def read(conn: Conn) -> tuple[list[KeyRow], list[Pool]]:
            shown = visible_pools(conn, found.pool_ids)
            return visible_keys(conn, found.pool_ids, pool_filter), [f.pool for f in shown]

        rows, pools = await db(read)
        return await render(
            "api_keys.html",
            status,
            keys=rows,
            pools=pools,
            pool_filter=str(pool_filter) if pool_filter else "",
            form=form,
            efforts=effort_choices(),
            effort_text=effort_text,
        )

    async def shown_once(key: ApiKey, raw: str, rotated: bool) -> Response:
        url = gateway_url()
        response = await render(
            "api_key_secret.html",
            key=key,
            raw_key=raw,
            rotated=rotated,
            snippets=client_snippets.snippets(url, raw),
            gateway_url=url,
        )
        response.headers["cache-control"] = "no-store"
        return response

    @bp.get(HOME)
    @operator_required()
    async def show(found: SignedIn) -> Response:
        return await list_page(found, KeyForm(pool=current_request().args.get("pool", "")))

    @bp.post(HOME)
    @operator_required()
    async def create(found: SignedIn) -> Response:
        posted = await read_form()
        once = form_once(found, posted)
        form = KeyForm(
            posted.get("name").strip(),
            posted.get("allowed_models"),
            posted.get("reasoning_effort", "none"),
            posted.get("pool"),
        )
        pool_id = parse_uuid(form.pool)
        if pool_id is None or not found.may_see_pool(pool_id):
            form.errors["pool"] = "Choose one of your Pools."
        if not form.parse() or pool_id is None:
            return await list_page(found, form, 400)
        secret, actor = console.gateway().config.secret_key, found.operator.email

        def make(conn: Conn) -> tuple[str, ApiKey]:
            once.claim(conn, "api_key.create")
            raw, key = keys.create_key(
                conn,
                secret,
                pool_name_of(conn, pool_id),
                form.name,
                allowed_models=form.allowed_models,
                effort=form.effort_policy,
                actor=actor,
            )
            once.made(conn, key.id)
            return raw, key

        try:
            raw, key = await db(make)
        except NotFoundError:
            raise NotFound() from None
        except StoreError as exc:  # the name is taken (or refused by the store)
            form.errors["name"] = exc.message
            return await list_page(found, form, 400)
        await apply_now()
        return await shown_once(key, raw, rotated=False)

    async def key_page(
        found: SignedIn, key: ApiKey, form: KeyForm | None = None, status: int = 200
    ) -> Response:
        return await render(
            "api_key.html",
            status,
            key=key,
            form=form or KeyForm.of_key(key),
            efforts=effort_choices(),
            effort_text=effort_text,
        )

    async def change(found: SignedIn, key_id: UUID, fn: Callable[[Conn, str], T]) -> T:
        """`fn(conn, ref)` on the key, in the transaction that checks the operator may see
        it (404 otherwise, nothing changed); applied to this node before returning."""

        def scoped(conn: Conn) -> T:
            scoped_key(conn, found.pool_ids, key_id)
            return fn(conn, str(key_id))

        try:
            result = await db(scoped)
        except NotFoundError:
            raise NotFound() from None
        await apply_now()
        return result

    @bp.get(f"{HOME}/<key_id>")
    @operator_required()
    async def detail(found: SignedIn, key_id: str) -> Response:
        ident = key_id_or_404(key_id)
        try:
            key = await db(lambda conn: scoped_key(conn, found.pool_ids, ident))
        except NotFoundError:
            raise NotFound() from None
        return await key_page(found, key)

    @bp.post(f"{HOME}/<key_id>/edit")
    @operator_required()
    async def edit(found: SignedIn, key_id: str) -> Response:
        ident = key_id_or_404(key_id)
        posted = await read_form()
        form = KeyForm(
            posted.get("name").strip(),
            posted.get("allowed_models"),
            posted.get("reasoning_effort", "none"),
        )
        actor = found.operator.email
        if form.parse():
            try:
                await change(
                    found,
                    ident,
                    lambda conn, ref: keys.update_key(
                        conn,
                        ref,
                        allowed_models=form.allowed_models,
                        effort=form.effort_policy,
                        name=form.name,
                        actor=actor,
                    ),
                )
                return redirect_to(f"{HOME}/{ident}?saved=1")
            except ConflictError as exc:
                form.errors["name"] = exc.message
        key = await db(lambda conn: scoped_key(conn, found.pool_ids, ident))
        return await key_page(found, key, form, 400)

    @bp.get(f"{HOME}/<key_id>/<action>")
    @operator_required()
    async def confirm(found: SignedIn, key_id: str, action: str) -> Response:
        ident = key_id_or_404(key_id)
        if action not in ("rotate", "revoke"):
            raise NotFound()
        try:
            key = await db(lambda conn: scoped_key(conn, found.pool_ids, ident))
        except NotFoundError:
            raise NotFound() from None
        if key.status == "revoked":
            return redirect_to(f"{HOME}/{ident}")
        return await render("api_key_confirm.html", key=key, action=action)

    @bp.post(f"{HOME}/<key_id>/rotate")
    @operator_required()
    async def rotate(found: SignedIn, key_id: str) -> Response:
        ident = key_id_or_404(key_id)
        once = form_once(found, await read_form())
        secret, actor = console.gateway().config.secret_key, found.operator.email

        def rotate_once(conn: Conn, ref: str) -> tuple[str, ApiKey]:
            once.claim(conn, "api_key.rotate", ident)
            return key_lifecycle.rotate_key(conn, secret, ref, actor=actor)

        raw, key = await change(found, ident, rotate_once)
        return await shown_once(key, raw, rotated=True)

    @bp.post(f"{HOME}/<key_id>/<action>")
    @operator_required()
    async def set_status(found: SignedIn, key_id: str, action: str) -> Response:
        ident = key_id_or_404(key_id)
        operations: dict[str, Callable[..., ApiKey]] = {
            "pause": key_lifecycle.pause_key,
            "resume": key_lifecycle.resume_key,
            "revoke": keys.revoke_key,
        }
        operation = operations.get(action)
        if operation is None:
            raise NotFound()
        await read_form()
        actor = found.operator.email
        await change(found, ident, lambda conn, ref: operation(conn, ref, actor=actor))
        return redirect_to(f"{HOME}/{ident}")

    return bp
