"""Getting in and out: `/` (where to go), `/bootstrap` (the first owner), `/login`,
`/logout`, `/password/change` (forced after a temporary password, or chosen), and the
second factor's `/login/code`."""

from __future__ import annotations

import time

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler.admin_ui import console
from pooler.admin_ui.console import SESSION_COOKIE, SignedIn
from pooler.admin_ui.pages import (
    SIGNED_IN_HOME,
    db,
    db_with_password,
    operator_required,
    public_page,
    read_form,
    redirect_to,
    render,
)
from pooler.store import console_sessions, console_signin, operators
from pooler.store.audit import record_event
from pooler.store.common import Conn, NotFoundError, StoreError


def signed_in_cookie(response: Response, token: str) -> Response:
    console.set_cookie(response, SESSION_COOKIE, token, console_sessions.SESSION_TTL)
    return response


def access_blueprint() -> Blueprint:
    bp = Blueprint("access", __name__)

    @bp.get("/")
    @public_page
    async def home() -> Response:
        found = await console.find_signed_in()
        if found is not None and found.session.stage == "full":
            return redirect_to(SIGNED_IN_HOME)
        if not await db(operators.owner_exists):
            return redirect_to("/bootstrap")
        return redirect_to("/login")

    @bp.get("/bootstrap")
    @public_page
    async def bootstrap_form() -> Response:
        if await db(operators.owner_exists):
            raise NotFound()
        return await render("bootstrap.html", email="", display_name="", error=None)

    @bp.post("/bootstrap")
    @public_page
    async def bootstrap() -> Response:
        if await db(operators.owner_exists):
            raise NotFound()
        form = await read_form()
        email, name, password = form.get("email"), form.get("display_name"), form.get("password")
        ip, agent = console.client_ip(), console.user_agent()
        secret = console.gateway().config.secret_key

        def create(conn: Conn) -> str:
            owner = operators.bootstrap_owner(conn, email, name, password)
            token, _ = console_sessions.create_session(
                conn, secret, owner.id, ip=ip, user_agent=agent
            )
            console_signin.audit_sign_in(conn, owner, ip, "bootstrap")
            return token

        try:
            token = await db_with_password(create)
        except StoreError as exc:
            if isinstance(exc, NotFoundError):
                raise NotFound() from None
            return await render(
                "bootstrap.html", 400, email=email, display_name=name, error=exc.message
            )
        return signed_in_cookie(redirect_to(SIGNED_IN_HOME), token)

    @bp.get("/login")
    @public_page
    async def login_form() -> Response:
        found = await console.find_signed_in()
        if found is not None and found.session.stage == "full":
            return redirect_to(SIGNED_IN_HOME)
        return await render("login.html", email="", error=None)

    @bp.post("/login")
    @public_page
    async def login() -> Response:
        form = await read_form()
        email, password = form.get("email"), form.get("password")
        secret = console.gateway().config.secret_key
        ip, agent = console.client_ip(), console.user_agent()
        replaced = console.read_cookie(SESSION_COOKIE)
        result = await db_with_password(
            lambda conn: console_signin.sign_in_with_password(
                conn, secret, email, password, ip=ip, user_agent=agent, replaces=replaced
            )
        )
        if result.kind == "throttled":
            wait = int(result.retry_after_s)
            response = await render(
                "login.html",
                429,
                email=email,
                error=f"Too many failed sign-ins. Try again in {wait} seconds.",
            )
            response.headers["retry-after"] = str(wait)
            return response
        if result.kind == "failed" or result.token is None:
            # The same words whether the email exists or not.
            return await render("login.html", 401, email=email, error="Wrong email or password.")
        target = "/login/code" if result.kind == "totp" else "/"
        return signed_in_cookie(redirect_to(target), result.token)

    @bp.post("/logout")
    @operator_required(stage=None, password_change=True)
    async def logout(found: SignedIn) -> Response:
        await read_form()
        ip = console.client_ip()
        await db(lambda conn: console_signin.sign_out(conn, found.session, found.operator, ip))
        response = redirect_to("/login")
        console.clear_cookie(response, SESSION_COOKIE)
        return response

    @bp.get("/password/change")
    @operator_required(password_change=True)
    async def password_form(found: SignedIn) -> Response:
        return await render("password_change.html", error=None)

    @bp.post("/password/change")
    @operator_required(password_change=True)
    async def password_change(found: SignedIn) -> Response:
        form = await read_form()
        current, new = form.get("current_password"), form.get("new_password")
        if new != form.get("confirm_password"):
            return await render("password_change.html", 400, error="The new passwords differ.")
        ip = console.client_ip()

        def change(conn: Conn) -> str | None:
            operator = found.operator
            if not operators.check_current_password(conn, operator.id, current):
                record_event(
                    conn,
                    actor=operator.email,
                    action="operator.password_change_failed",
                    target_type="operator",
                    target_id=operator.id,
                    details={"ip": ip, "reason": "wrong_current_password"},
                    outcome="failed",
                )
                return "The current password is wrong."
            if new == current:
                return "The new password must differ from the current one."
            operators.set_password(conn, operator.id, new, must_change=False, actor=operator.email)
            console_sessions.revoke_other_sessions(conn, operator.id, keep=found.session.id)
            return None

        try:
            error = await db_with_password(change)
        except StoreError as exc:
            error = exc.message
        if error is not None:
            return await render("password_change.html", 400, error=error)
        return redirect_to(SIGNED_IN_HOME)

    return bp


def second_factor_blueprint() -> Blueprint:
    """`/login/code`: the TOTP (or recovery code) step after a correct password."""
    bp = Blueprint("second_factor", __name__)

    @bp.get("/login/code")
    @operator_required(stage="totp", password_change=True)
    async def code_form(found: SignedIn) -> Response:
        return await render("login_code.html", error=None)

    @bp.post("/login/code")
    @operator_required(stage="totp", password_change=True)
    async def code(found: SignedIn) -> Response:
        form = await read_form()
        gateway = console.gateway()
        secret, keyring = gateway.config.secret_key, gateway.keyring
        ip, agent, now = console.client_ip(), console.user_agent(), time.time()
        result = await db(
            lambda conn: console_signin.sign_in_second_factor(
                conn,
                secret,
                keyring,
                found.session,
                found.operator,
                form.get("code"),
                ip=ip,
                user_agent=agent,
                now=now,
            )
        )
        if result.kind == "throttled":
            wait = int(result.retry_after_s)
            response = await render(
                "login_code.html", 429, error=f"Too many wrong codes. Try again in {wait} seconds."
            )
            response.headers["retry-after"] = str(wait)
            return response
        if result.token is None:
            return await render("login_code.html", 401, error="That code is not valid.")
        return signed_in_cookie(redirect_to("/"), result.token)

    return bp
