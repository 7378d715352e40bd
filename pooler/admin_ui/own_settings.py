"""`/admin/settings`: the signed-in operator's own account: profile, password (the
`/password/change` form), two-factor sign-in (enrol with a QR code, confirm with a code,
disable), recovery codes (regenerate: shown once), sessions (revoke one, revoke others) and
MCP access (its routes are in `own_mcp`).
Disabling TOTP and regenerating recovery codes ask for the current password again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

from markupsafe import Markup
from quart import Blueprint
from quart.wrappers import Response

from pooler import totp
from pooler.admin_ui import console
from pooler.admin_ui.console import SESSION_COOKIE, SignedIn
from pooler.admin_ui.form_once import form_once
from pooler.admin_ui.own_mcp import McpView, add_mcp_routes, instance_enabled, mcp_view
from pooler.admin_ui.pages import (
    db,
    db_with_password,
    operator_required,
    read_form,
    redirect_to,
    render,
)
from pooler.store import console_sessions, operator_totp, operators
from pooler.store.audit import record_event
from pooler.store.common import Conn, StoreError
from pooler.store.console_sessions import ConsoleSession

HOME = "/admin/settings"


@dataclass(frozen=True, slots=True)
class AccountView:
    sessions: list[ConsoleSession]
    recovery_left: int
    totp_pending: bool
    mcp: McpView


def account_view(conn: Conn, found: SignedIn, mcp_on: bool) -> AccountView:
    operator_id = found.operator.id
    pending = conn.execute(
        "SELECT totp_ciphertext IS NOT NULL AND totp_enabled_at IS NULL FROM operators"
        " WHERE id = %s",
        (operator_id,),
    ).fetchone()
    return AccountView(
        console_sessions.list_sessions(conn, operator_id),
        operator_totp.unused_recovery_codes(conn, operator_id),
        bool(pending and pending[0]),
        mcp_view(conn, operator_id, mcp_on),
    )


def audit_session_event(conn: Conn, found: SignedIn, action: str, details: dict[str, str]) -> None:
    record_event(
        conn,
        actor=found.operator.email,
        action=action,
        target_type="operator",
        target_id=found.operator.id,
        details=details,
    )


class WrongCode(Exception):
    """The TOTP code did not match: nothing of the confirmation is kept."""


def own_settings_blueprint() -> Blueprint:
    bp = Blueprint("own_settings", __name__)

    async def page(found: SignedIn, status: int = 200, **context: object) -> Response:
        mcp_on = instance_enabled()
        view = await db(lambda conn: account_view(conn, found, mcp_on))
        context.setdefault("error", None)
        context.setdefault("notice", None)
        context.setdefault("mcp_name", "")
        return await render("own_settings.html", status, view=view, **context)

    @bp.get(HOME)
    @operator_required()
    async def show(found: SignedIn) -> Response:
        return await page(found)

    @bp.post(f"{HOME}/profile")
    @operator_required()
    async def profile(found: SignedIn) -> Response:
        form = await read_form()
        name = form.get("display_name")
        try:
            await db(
                lambda conn: operators.set_display_name(
                    conn, found.operator.id, name, actor=found.operator.email
                )
            )
        except StoreError as exc:
            return await page(found, 400, error=exc.message)
        return redirect_to(HOME)

    @bp.post(f"{HOME}/totp/start")
    @operator_required()
    async def totp_start(found: SignedIn) -> Response:
        await read_form()
        keyring = console.gateway().keyring
        try:
            await db(lambda conn: operator_totp.begin_totp(conn, keyring, found.operator.id))
        except StoreError as exc:
            return await page(found, 400, error=exc.message)
        return redirect_to(f"{HOME}/totp")

    async def enrol_page(found: SignedIn, status: int = 200, error: str | None = None) -> Response:
        keyring = console.gateway().keyring
        secret = await db(
            lambda conn: operator_totp.pending_secret(conn, keyring, found.operator.id)
        )
        if secret is None:
            return redirect_to(HOME)
        uri = totp.provisioning_uri(secret, found.operator.email)
        # The SVG is ours (modules only, no text from the operator): safe as markup.
        qr = Markup(totp.qr_svg(uri))
        grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
        return await render("totp_enrol.html", status, qr=qr, secret=grouped, error=error)

    @bp.get(f"{HOME}/totp")
    @operator_required()
    async def totp_enrol(found: SignedIn) -> Response:
        return await enrol_page(found)

    @bp.post(f"{HOME}/totp/confirm")
    @operator_required()
    async def totp_confirm(found: SignedIn) -> Response:
        form = await read_form()
        once = form_once(found, form)
        gateway = console.gateway()
        keyring, secret_key, code, now = (
            gateway.keyring,
            gateway.config.secret_key,
            form.get("code"),
            time.time(),
        )

        def enable(conn: Conn) -> list[str]:
            once.claim(conn, "totp.enable", found.operator.id)
            codes = operator_totp.enable_totp(
                conn, keyring, secret_key, found.operator.id, code, now, actor=found.operator.email
            )
            if codes is None:
                raise WrongCode  # rolls the claim back: the form may be sent again
            return codes

        try:
            codes = await db(enable)
        except StoreError as exc:
            return await page(found, 400, error=exc.message)
        except WrongCode:
            return await enrol_page(found, 400, "That code is not valid; try the next one.")
        return await render("recovery_codes.html", codes=codes, enabled=True)

    @bp.post(f"{HOME}/totp/disable")
    @operator_required()
    async def totp_disable(found: SignedIn) -> Response:
        form = await read_form()
        password = form.get("password")

        def disable(conn: Conn) -> bool:
            if not operators.check_current_password(conn, found.operator.id, password):
                return False
            operator_totp.disable_totp(conn, found.operator.id, actor=found.operator.email)
            return True

        if not await db_with_password(disable):
            return await page(found, 400, error="The password is wrong.")
        return await page(found, notice="Two-factor sign-in is off.")

    @bp.post(f"{HOME}/recovery-codes")
    @operator_required()
    async def recovery_codes(found: SignedIn) -> Response:
        form = await read_form()
        once = form_once(found, form)
        password, secret_key = form.get("password"), console.gateway().config.secret_key

        def regenerate(conn: Conn) -> list[str] | None:
            if not operators.check_current_password(conn, found.operator.id, password):
                return None  # before the claim: the form may be sent again
            once.claim(conn, "recovery_codes.regenerate", found.operator.id)
            return operator_totp.regenerate_recovery_codes(
                conn, secret_key, found.operator.id, actor=found.operator.email
            )

        try:
            codes = await db_with_password(regenerate)
        except StoreError as exc:
            return await page(found, 400, error=exc.message)
        if codes is None:
            return await page(found, 400, error="The password is wrong.")
        return await render("recovery_codes.html", codes=codes, enabled=False)

    @bp.post(f"{HOME}/sessions/<uuid:session_id>/revoke")
    @operator_required()
    async def revoke(found: SignedIn, session_id: UUID) -> Response:
        await read_form()

        def end(conn: Conn) -> bool:
            ended = console_sessions.revoke_session(conn, session_id, found.operator.id)
            if ended:
                audit_session_event(
                    conn, found, "console.session_revoke", {"session": str(session_id)}
                )
            return ended

        await db(end)
        if session_id == found.session.id:
            response = redirect_to("/login")
            console.clear_cookie(response, SESSION_COOKIE)
            return response
        return redirect_to(HOME)

    @bp.post(f"{HOME}/sessions/revoke-others")
    @operator_required()
    async def revoke_others(found: SignedIn) -> Response:
        await read_form()

        def end(conn: Conn) -> int:
            ended = console_sessions.revoke_other_sessions(
                conn, found.operator.id, keep=found.session.id
            )
            audit_session_event(conn, found, "console.session_revoke_others", {"ended": str(ended)})
            return ended

        ended = await db(end)
        return await page(found, notice=f"Signed out {ended} other session(s).")

    add_mcp_routes(bp, page)
    return bp
