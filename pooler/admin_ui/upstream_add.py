"""`/admin/upstreams/new`: adding an account to a Pool, three ways, and re-linking one.

1. **Upload an auth.json** (`/admin/upstreams/new/import`): a multipart form read through
   the gateway's bounded reader (`request_body.read_form`, 64 KiB), its CSRF token a form
   field checked like every console form; stored by `accounts.import_account` (the CLI's
   validation and messages, shown beside the field).
2. **Browser sign-in with PKCE** (`/new/browser`): `oauth_login.start_browser_sign_in`
   makes the authorize URL; the state and verifier stay on the server, encrypted in the
   database (`store.console_sign_ins`, so any gateway node can finish the sign-in); the
   operator opens the URL in a new tab and pastes back the callback URL they land on;
   `finish_browser_sign_in` checks the state and exchanges the code.
3. **Device code** (`/new/device`): `start_device_sign_in` gives the user code and the
   verification URL; the flow's page reloads itself (`<meta http-equiv="refresh">`, no
   script) at the server's interval and polls once per load, never sooner than that
   interval (the poll is claimed in the database: once however many loads, on however
   many nodes), until the sign-in is done, denied or expired.

Both sign-ins end in `sign_in.add_signed_in_account`: an account already known is
re-linked (new tokens, active, assigned) rather than duplicated. A re-link
(`?relink=ACCOUNT`) must sign in as that account: another one is refused and nothing is
stored. Every auth-server call is sync httpx in a worker thread.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import httpx
import trio
from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import Forbidden, NotFound, UnsupportedMediaType

from pooler.admin_ui import console
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import (
    CSRF_FIELD,
    csrf_token,
    db,
    operator_required,
    pool_or_404,
    read_form,
    redirect_to,
    render,
)
from pooler.admin_ui.upstream_view import load_accounts, other_pools
from pooler.crypto import Keyring
from pooler.store import accounts
from pooler.store import console_sign_ins as sign_ins
from pooler.store.common import ConflictError, Conn, NotFoundError, StoreError
from pooler.store.console_sign_ins import ConsoleSignIn
from pooler.store.sign_in import SignedInAccount, add_signed_in_account
from pooler.upstream import oauth_login
from pooler.upstream.oauth_login import SignInError, SignInTokens
from pooler.web.quart_http import current_request
from pooler.web.request_body import read_form as read_multipart

HOME: Final = "/admin/upstreams"
NEW: Final = f"{HOME}/new"
FLOWS: Final = f"{HOME}/sign-in"
MAX_AUTH_JSON_BYTES: Final = 64 * 1024  # an auth.json is a few KiB
HTTP_TIMEOUT_S: Final = oauth_login.HTTP_TIMEOUT_S
WRONG_CALLBACK: Final = (
    "This address belongs to another sign-in (its state does not match). Paste the address"
    " the tab opened from this page landed on."
)


def _uuid(raw: str) -> UUID | None:
    try:
        return UUID(raw) if raw else None
    except ValueError:
        raise NotFound("no such Pool or account") from None


def target(conn: Conn, found: SignedIn, raw_pool: str, raw_relink: str) -> tuple[UUID, str, Any]:
    """The Pool (id, name) an account is added to, and the account re-linked (or None):
    both must be the operator's, else 404."""
    pool_id = _uuid(raw_pool)
    if pool_id is None:
        raise NotFound("no such Pool")
    pool_or_404(found, pool_id)
    row = conn.execute("SELECT name FROM pools WHERE id = %s", (pool_id,)).fetchone()
    if row is None:
        raise NotFound("no such Pool")
    relink_id = _uuid(raw_relink)
    relink = None
    if relink_id is not None:
        rows = load_accounts(conn, found.pool_ids, relink_id)
        if not rows:
            raise NotFound("no such account")
        relink = rows[0]
    return pool_id, str(row[0]), relink


def store_sign_in(
    conn: Conn, keyring: Keyring, flow: ConsoleSignIn, tokens: SignInTokens, method: str, actor: str
) -> SignedInAccount:
    """Add (or re-link) the signed-in account; a re-link that signed in as another account
    is refused and rolled back."""
    added = add_signed_in_account(conn, keyring, flow.pool_name, tokens, method=method, actor=actor)
    if flow.relink is not None and added.account.id != flow.relink:
        raise ConflictError(
            f"that sign-in is {added.account.label!r}, not the account being re-linked;"
            " nothing was changed: sign in as the right ChatGPT account"
        )
    return added


def upstream_add_blueprint() -> Blueprint:
    bp = Blueprint("upstream_add", __name__)

    async def add_page(
        found: SignedIn,
        raw_pool: str,
        raw_relink: str = "",
        status: int = 200,
        **context: Any,
    ) -> Response:
        if not raw_pool:
            choices = await db(lambda conn: other_pools(conn, found.pool_ids))
            if len(choices) == 1:
                return redirect_to(f"{NEW}?pool={choices[0][0]}")
            return await render("upstream_pick_pool.html", status, pools=choices)
        pool_id, pool_name, relink = await db(
            lambda conn: target(conn, found, raw_pool, raw_relink)
        )
        context.setdefault("upload_error", None)
        context.setdefault("error", None)
        return await render(
            "upstream_add.html",
            status,
            pool_id=pool_id,
            pool_name=pool_name,
            relink=relink,
            **context,
        )

    @bp.get(NEW)
    @operator_required()
    async def new(found: SignedIn) -> Response:
        args = current_request().args
        return await add_page(found, args.get("pool", ""), args.get("relink", ""))

    @bp.post(f"{NEW}/import")
    @operator_required()
    async def upload(found: SignedIn) -> Response:
        fields, files = await read_upload()
        raw_pool, label = fields.get("pool", ""), fields.get("label", "").strip() or None
        _, pool_name, _ = await db(lambda conn: target(conn, found, raw_pool, ""))
        part = files.get("auth_json")
        raw = part.read(MAX_AUTH_JSON_BYTES + 1) if part is not None else b""
        try:
            auth_json = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError) as exc:
            return await add_page(
                found, raw_pool, status=400, upload_error=f"cannot read the auth.json: {exc}"
            )
        if auth_json is None:
            return await add_page(found, raw_pool, status=400, upload_error="choose a file")
        keyring = console.gateway().keyring
        try:
            account = await db(
                lambda conn: accounts.import_account(
                    conn, keyring, pool_name, auth_json, label, actor=found.operator.email
                )
            )
        except StoreError as exc:
            return await add_page(found, raw_pool, status=400, upload_error=exc.message)
        return redirect_to(f"{HOME}/{account.id}")

    async def read_upload() -> tuple[Any, Any]:
        """The multipart form, bounded, after the same checks as `read_form` (same-site,
        the session's CSRF token)."""
        request = current_request()
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            raise Forbidden("this form was sent from another site")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "multipart/form-data":
            raise UnsupportedMediaType("an auth.json is uploaded as multipart/form-data")
        gw = console.gateway()
        fields, files = await read_multipart(gw, request, MAX_AUTH_JSON_BYTES + 4096)
        if not hmac.compare_digest(fields.get(CSRF_FIELD, "").encode(), csrf_token().encode()):
            raise Forbidden("the form's security token is missing or out of date; reload the page")
        return fields, files

    @bp.post(f"{NEW}/browser")
    @operator_required()
    async def browser_start(found: SignedIn) -> Response:
        form = await read_form()
        raw_pool, raw_relink = form.get("pool"), form.get("relink")
        sign_in = oauth_login.start_browser_sign_in(console.gateway().config.auth_base_url)
        return await keep(found, raw_pool, raw_relink, sign_in)

    @bp.post(f"{NEW}/device")
    @operator_required()
    async def device_start(found: SignedIn) -> Response:
        form = await read_form()
        raw_pool, raw_relink = form.get("pool"), form.get("relink")
        await db(lambda conn: target(conn, found, raw_pool, raw_relink))  # 404 before asking
        base = console.gateway().config.auth_base_url

        def start() -> oauth_login.DeviceSignIn:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
                return oauth_login.start_device_sign_in(http, base)

        try:
            device = await trio.to_thread.run_sync(start)
        except SignInError as exc:
            return await add_page(found, raw_pool, raw_relink, 502, error=exc.message)
        return await keep(found, raw_pool, raw_relink, device)

    async def keep(
        found: SignedIn,
        raw_pool: str,
        raw_relink: str,
        sign_in: oauth_login.BrowserSignIn | oauth_login.DeviceSignIn,
    ) -> Response:
        keyring, session_id = console.gateway().keyring, found.session.id

        def save(conn: Conn) -> UUID:
            pool_id, _, relink = target(conn, found, raw_pool, raw_relink)
            relink_id = relink.id if relink else None
            return sign_ins.start(conn, keyring, session_id, pool_id, relink_id, sign_in)

        flow_id = await db(save)
        return redirect_to(f"{FLOWS}/{flow_id}")

    async def flow_of(found: SignedIn, raw_id: str) -> ConsoleSignIn:
        # The same 404 for unknown, another session's and expired; it says what to do.
        gone = NotFoundError("This sign-in is over or unknown; start a new one.")
        try:
            flow_id = UUID(raw_id)
        except ValueError:
            raise gone from None
        keyring, session_id = console.gateway().keyring, found.session.id
        flow = await db(lambda conn: sign_ins.get(conn, keyring, flow_id, session_id))
        if flow is None:
            raise gone
        pool_or_404(found, flow.pool_id)
        return flow

    async def flow_page(
        flow: ConsoleSignIn, status: int = 200, error: str | None = None
    ) -> Response:
        refresh_in = None
        if flow.device is not None and not flow.finished and flow.next_poll_at is not None:
            refresh_in = max(1, math.ceil(flow.next_poll_at.timestamp() - time.time()))
        return await render(
            "upstream_sign_in.html", status, flow=flow, error=error, refresh_in=refresh_in
        )

    @bp.get(f"{FLOWS}/<flow_id>")
    @operator_required()
    async def flow_show(found: SignedIn, flow_id: str) -> Response:
        flow = await flow_of(found, flow_id)
        if flow.device is not None and not flow.finished:
            await poll_device(found, flow)
        return await flow_page(flow)

    async def poll_device(found: SignedIn, flow: ConsoleSignIn) -> None:
        """Ask the auth server once, if a poll is due (claimed in the database, so however
        many loads of the page, on however many nodes, ask once per the server's
        interval)."""
        keyring, session_id = console.gateway().keyring, found.session.id
        device = await db(lambda conn: sign_ins.claim_poll(conn, keyring, flow.id, session_id))
        if device is None:
            fresh = await db(lambda conn: sign_ins.get(conn, keyring, flow.id, session_id))
            if fresh is not None:  # the next poll's time, or another load's outcome
                flow.next_poll_at, flow.error = fresh.next_poll_at, fresh.error
                flow.account_id, flow.created = fresh.account_id, fresh.created
            return
        flow.next_poll_at = datetime.now(UTC) + timedelta(seconds=device.interval)
        base = console.gateway().config.auth_base_url

        def poll() -> SignInTokens | None:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
                return oauth_login.poll_device_sign_in(http, base, device)

        try:
            tokens = await trio.to_thread.run_sync(poll)
        except oauth_login.SignInDenied:
            await fail(found, flow, "The sign-in was denied.")
            return
        except oauth_login.SignInExpired:
            await fail(found, flow, sign_ins.DEVICE_EXPIRED)
            return
        except SignInError as exc:
            if not exc.retryable:
                await fail(found, flow, exc.message)
            return
        if tokens is not None:
            await finish(found, flow, tokens, "device_code")

    async def fail(found: SignedIn, flow: ConsoleSignIn, message: str) -> None:
        session_id = found.session.id
        await db(lambda conn: sign_ins.fail(conn, flow.id, session_id, message))
        flow.error = message

    async def finish(
        found: SignedIn, flow: ConsoleSignIn, tokens: SignInTokens, method: str
    ) -> None:
        keyring, session_id = console.gateway().keyring, found.session.id

        def store(conn: Conn) -> SignedInAccount:
            added = store_sign_in(conn, keyring, flow, tokens, method, found.operator.email)
            sign_ins.finish(conn, flow.id, session_id, added.account.id, added.created)
            return added

        try:
            added = await db(store)
        except StoreError as exc:
            await fail(found, flow, exc.message)
            return
        flow.account_id, flow.created = added.account.id, added.created

    @bp.post(f"{FLOWS}/<flow_id>")
    @operator_required()
    async def flow_finish(found: SignedIn, flow_id: str) -> Response:
        form = await read_form()
        flow = await flow_of(found, flow_id)
        sign_in = flow.browser
        if sign_in is None or flow.finished:
            return await flow_page(flow)
        pasted, base = form.get("callback_url"), console.gateway().config.auth_base_url

        def exchange() -> SignInTokens:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
                return oauth_login.finish_browser_sign_in(http, base, sign_in, pasted)

        try:
            tokens = await trio.to_thread.run_sync(exchange)
        except oauth_login.StateMismatch:  # this sign-in stays open for the right URL
            return await flow_page(flow, 400, WRONG_CALLBACK)
        except SignInError as exc:
            await fail(found, flow, exc.message)
            return await flow_page(flow, 400)
        await finish(found, flow, tokens, "browser")
        return await flow_page(flow, 400 if flow.error else 200)

    @bp.post(f"{FLOWS}/<flow_id>/cancel")
    @operator_required()
    async def flow_cancel(found: SignedIn, flow_id: str) -> Response:
        await read_form()
        flow = await flow_of(found, flow_id)
        session_id = found.session.id
        await db(lambda conn: sign_ins.drop(conn, flow.id, session_id))
        return redirect_to(f"{NEW}?pool={flow.pool_id}")

    return bp
