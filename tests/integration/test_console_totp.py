"""Two-factor sign-in in the console: enrol with a QR code and a confirming code, sign in
with a code (each used once) or a recovery code (each used once), disable; all audited."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
from console_support import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    browser,
    csrf_of,
    once_of,
    post_form,
    sign_in,
)
from harness import Stack, open_stack

from pooler import store
from pooler.store import operators

SECRET_RE = re.compile(r'<code class="mono">([A-Z2-7 ]+)</code>')
CODE_RE = re.compile(r'<li><code class="mono">([a-z2-7-]+)</code></li>')


async def audit_actions(stack: Stack) -> list[str]:
    return [e.action for e in await stack.database.run(lambda c: store.list_audit_events(c, 500))]


async def enrol(client: httpx.AsyncClient) -> tuple[pyotp.TOTP, list[str]]:
    """Turn TOTP on for the signed-in operator: its generator and the recovery codes."""
    started = await post_form(client, "/admin/settings", {}, action="/admin/settings/totp/start")
    assert (started.status_code, started.headers["location"]) == (303, "/admin/settings/totp")
    page = await client.get("/admin/settings/totp")
    assert page.status_code == 200 and "<svg" in page.text and ">Code</label>" in page.text
    secret = SECRET_RE.search(page.text)
    assert secret
    generator = pyotp.TOTP(secret.group(1).replace(" ", ""))
    fields = {
        "csrf_token": csrf_of(page.text),
        "form_once": once_of(page.text, "/admin/settings/totp/confirm") or "",
    }
    wrong = await client.post("/admin/settings/totp/confirm", data={**fields, "code": "000000"})
    assert wrong.status_code == 400 and "not valid" in wrong.text
    done = await client.post(
        "/admin/settings/totp/confirm",
        data={**fields, "code": generator.now()},
    )
    assert done.status_code == 200
    codes = CODE_RE.findall(done.text)
    assert len(codes) == 10
    return generator, codes


async def second_factor(client: httpx.AsyncClient, code: str) -> httpx.Response:
    page = await client.get("/login/code")
    assert page.status_code == 200, page.status_code
    return await client.post("/login/code", data={"csrf_token": csrf_of(page.text), "code": code})


async def test_enrol_then_sign_in_with_a_code_used_once(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(client)
        generator, _ = await enrol(client)
        stored = await stack.database.run(
            lambda conn: conn.execute("SELECT totp_ciphertext FROM operators").fetchone()[0]
        )
        assert generator.secret.encode() not in bytes(stored)  # encrypted at rest
        settings = await client.get("/admin/settings")
        assert "Recovery codes left: <strong>10</strong>" in settings.text

        async with browser(stack) as other:
            first = await sign_in(other)
            assert (first.status_code, first.headers["location"]) == (303, "/login/code")
            # Half-way, the session opens nothing else.
            held = await other.get("/admin/pools")
            assert (held.status_code, held.headers["location"]) == (303, "/login")
            assert (await second_factor(other, "123")).status_code == 401
            code = generator.at(time.time() + 30)  # the next step's: within the drift
            done = await second_factor(other, code)
            assert (done.status_code, done.headers["location"]) == (303, "/")
            assert (await other.get("/admin/pools")).status_code == 200

        async with browser(stack) as replay:
            await sign_in(replay)
            again = await second_factor(replay, code)  # the same code a second time
            assert again.status_code == 401 and "not valid" in again.text
            earlier = await second_factor(replay, generator.now())  # an earlier step's
            assert earlier.status_code == 401
        actions = await audit_actions(stack)
        assert "operator.totp_enable" in actions
        assert actions.count("console.sign_in_failed") == 3


async def test_recovery_codes_sign_in_once_each(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(client)
        _, codes = await enrol(client)
        async with browser(stack) as other:
            await sign_in(other)
            used = await second_factor(other, codes[3].upper())
            assert used.status_code == 303
        async with browser(stack) as other:
            await sign_in(other)
            assert (await second_factor(other, codes[3])).status_code == 401
        assert "operator.recovery_code_used" in await audit_actions(stack)
        page = await client.get("/admin/settings")
        assert "Recovery codes left: <strong>9</strong>" in page.text

        regenerate = {"password": OWNER_PASSWORD}
        fresh = await post_form(
            client, "/admin/settings", regenerate, "/admin/settings/recovery-codes"
        )
        new_codes = CODE_RE.findall(fresh.text)
        assert len(new_codes) == 10 and not set(new_codes) & set(codes)
        async with browser(stack) as other:
            await sign_in(other)
            assert (await second_factor(other, codes[0])).status_code == 401  # old ones gone
            assert (await second_factor(other, new_codes[0])).status_code == 303


async def test_turning_totp_off_asks_for_the_password(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(client)
        await enrol(client)
        off = "/admin/settings/totp/disable"
        wrong = await post_form(client, "/admin/settings", {"password": "not it at all"}, off)
        assert wrong.status_code == 400
        right = await post_form(client, "/admin/settings", {"password": OWNER_PASSWORD}, off)
        assert right.status_code == 200 and "Two-factor sign-in is off." in right.text
        row: Any = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT totp_ciphertext, (SELECT count(*) FROM operator_recovery_codes)"
                " FROM operators"
            ).fetchone()
        )
        assert row == (None, 0)
        async with browser(stack) as other:
            assert (await sign_in(other)).headers["location"] == "/"
        assert "operator.totp_disable" in await audit_actions(stack)


async def test_sessions_are_listed_and_revoked(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(
                conn, OWNER_EMAIL, OWNER_PASSWORD, display_name="<i>Owner</i>"
            )
        )
        agents = ["Browser-A", "Browser-B", "Browser-C"]
        others = [browser(stack, headers={"user-agent": agent}) for agent in agents]
        for other in others:
            await sign_in(other)
        await sign_in(client)
        page = await client.get("/admin/settings")
        assert all(agent in page.text for agent in agents)
        assert "&lt;i&gt;Owner&lt;/i&gt;" in page.text and "<i>Owner</i>" not in page.text
        assert "Sign out (this session)" in page.text

        ids = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT id::text FROM console_sessions WHERE user_agent = 'Browser-A'"
            ).fetchall()
        )
        revoke = f"/admin/settings/sessions/{ids[0][0]}/revoke"
        done = await post_form(client, "/admin/settings", {}, revoke)
        assert (done.status_code, done.headers["location"]) == (303, "/admin/settings")
        assert (await others[0].get("/admin/pools")).status_code == 303
        assert (await others[1].get("/admin/pools")).status_code == 200

        rest = await post_form(
            client, "/admin/settings", {}, "/admin/settings/sessions/revoke-others"
        )
        assert "Signed out 2 other session(s)." in rest.text
        assert (await others[1].get("/admin/pools")).status_code == 303
        assert (await others[2].get("/admin/pools")).status_code == 303
        assert (await client.get("/admin/pools")).status_code == 200

        renamed = await post_form(
            client, "/admin/settings", {"display_name": "Renamed"}, "/admin/settings/profile"
        )
        assert renamed.status_code == 303
        assert "Renamed" in (await client.get("/admin/settings")).text
        for other in others:
            await other.aclose()
        actions = await audit_actions(stack)
        assert {"console.session_revoke", "console.session_revoke_others"} <= set(actions)


async def test_the_half_way_session_lasts_minutes_only(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(client)
        await enrol(client)
        async with browser(stack) as other:
            await sign_in(other)
            life = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT expires_at - created_at FROM console_sessions WHERE stage = 'totp'"
                ).fetchone()[0]
            )
            assert life.total_seconds() == 600
            await stack.database.run(
                lambda conn: conn.execute(
                    "UPDATE console_sessions SET expires_at = now() WHERE stage = 'totp'"
                )
            )
            late = await other.get("/login/code")
            assert (late.status_code, late.headers["location"]) == (303, "/login")
