"""The Operators page (`/admin/operators`, owner only): create with a temporary password
shown once and changed at the first sign-in, role and Pools, deactivate/reactivate and
password reset (both end the operator's sessions), delete; the last active owner stays
(enforced by the store, so the CLI gets it too); admins are refused; CSRF; escaping."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from console_support import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    bootstrap_owner,
    browser,
    csrf_of,
    post_form,
    sign_in,
)
from harness import Stack, open_stack

from pooler import store
from pooler.cli.admin_operators import register_operators
from pooler.cli.common import CommandError, run_in_store
from pooler.store import operators
from pooler.store.common import ConflictError

XSS = "<script>alert(1)</script>"
TEMP_RE = re.compile(r'<code class="mono secret">([^<]+)</code>')
NEW_PASSWORD = "the admin's own password"


async def operator_id(stack: Stack, email: str) -> UUID:
    row = await stack.database.run(
        lambda conn: conn.execute("SELECT id FROM operators WHERE email = %s", (email,)).fetchone()
    )
    assert row is not None
    return UUID(str(row[0]))


async def operator_row(stack: Stack, email: str) -> Any:
    return await stack.database.run(
        lambda conn: operators.get_operator(
            conn,
            conn.execute("SELECT id FROM operators WHERE email = %s", (email,)).fetchone()[0],
        )
    )


async def audit_actions(stack: Stack) -> list[str]:
    events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
    return [e.action for e in events]


async def create_admin(owner: httpx.AsyncClient, stack: Stack, email: str) -> str:
    demo = await stack.database.run(lambda conn: store.get_pool(conn, "demo").id)
    created = await post_form(
        owner,
        "/admin/operators",
        {"email": email, "display_name": XSS, "role": "admin", "pool": str(demo)},
    )
    assert created.status_code == 200, created.text
    found = TEMP_RE.search(created.text)
    assert found, "the temporary password is shown"
    return found.group(1)


async def test_create_an_admin_who_must_change_the_temporary_password(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_stack(db_url, tmp_path) as stack,
        browser(stack) as owner,
        browser(stack) as admin,
    ):
        assert (await bootstrap_owner(owner)).status_code == 303
        temp = await create_admin(owner, stack, "Admin@Example.com")
        listing = (await owner.get("/admin/operators")).text
        assert XSS not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
        assert "admin@example.com" in listing and temp not in listing  # shown once only
        row = await operator_row(stack, "admin@example.com")
        assert row.must_change_password and row.role == "admin" and row.status == "active"
        stored = await stack.database.run(
            lambda conn: conn.execute("SELECT password_hash FROM operators").fetchall()
        )
        assert all(temp not in r[0] for r in stored)
        audit = await stack.database.run(lambda conn: store.list_audit_events(conn, 50))
        assert "operator.create" in [e.action for e in audit]
        assert temp not in repr([e.details for e in audit])

        # First sign-in: every page sends them to the forced change.
        assert (await sign_in(admin, "admin@example.com", temp)).status_code == 303
        assert (await admin.get("/admin/pools")).headers["location"] == "/password/change"
        changed = await post_form(
            admin,
            "/password/change",
            {
                "current_password": temp,
                "new_password": NEW_PASSWORD,
                "confirm_password": NEW_PASSWORD,
            },
        )
        assert changed.status_code == 303, changed.text
        pools_page = await admin.get("/admin/pools")
        assert pools_page.status_code == 200 and "demo" in pools_page.text
        assert not (await operator_row(stack, "admin@example.com")).must_change_password

        # An admin is refused the owner's pages and changes nothing there.
        assert (await admin.get("/admin/operators")).status_code == 403
        token = csrf_of(pools_page.text)
        refused = await admin.post(
            "/admin/operators",
            data={"csrf_token": token, "email": "x@example.com", "role": "owner"},
        )
        assert refused.status_code == 403
        target = await operator_id(stack, OWNER_EMAIL)
        for action in ("deactivate", "reset-password", "delete"):
            answer = await admin.post(
                f"/admin/operators/{target}/{action}", data={"csrf_token": token}
            )
            assert answer.status_code == 403
        assert (await operator_row(stack, OWNER_EMAIL)).status == "active"
        count = await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM operators").fetchone()[0]
        )
        assert count == 2


async def test_refused_forms_change_nothing(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        no_csrf = await owner.post(
            "/admin/operators", data={"email": "a@example.com", "role": "admin"}
        )
        assert no_csrf.status_code == 403
        bad = await post_form(owner, "/admin/operators", {"email": "nope", "role": "admin"})
        assert bad.status_code == 400 and "name@example.com" in bad.text
        assert 'value="nope"' in bad.text  # the form keeps what was typed
        role = await post_form(
            owner, "/admin/operators", {"email": "a@example.com", "role": "root"}
        )
        assert role.status_code == 400 and "role must be one of" in role.text
        pool = await post_form(
            owner,
            "/admin/operators",
            {"email": "a@example.com", "role": "admin", "pool": "not-a-uuid"},
        )
        assert pool.status_code == 400
        dup = await post_form(
            owner, "/admin/operators", {"email": OWNER_EMAIL.upper(), "role": "admin"}
        )
        assert dup.status_code == 409 and "already exists" in dup.text
        count = await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM operators").fetchone()[0]
        )
        assert count == 1
        missing = await post_form(
            owner,
            "/admin/operators",
            {"csrf_token": ""},
            action="/admin/operators/00000000-0000-0000-0000-000000000000/deactivate",
        )
        assert missing.status_code in (403, 404)


async def test_reset_deactivate_reactivate_role_and_pools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        team = await stack.database.run(lambda conn: store.create_pool(conn, "team").id)
        async with browser(stack) as owner, browser(stack) as admin:
            await bootstrap_owner(owner)
            temp = await create_admin(owner, stack, "admin@example.com")
            target = await operator_id(stack, "admin@example.com")
            page = f"/admin/operators/{target}"
            await sign_in(admin, "admin@example.com", temp)
            assert (await admin.get("/password/change")).status_code == 200

            # Reset: a new temporary password, shown once; their sessions end.
            reset = await post_form(owner, page, {}, action=f"{page}/reset-password")
            assert reset.status_code == 200
            second = TEMP_RE.search(reset.text)
            assert second and second.group(1) != temp
            assert (await admin.get("/password/change")).headers["location"] == "/login"
            assert (await sign_in(admin, "admin@example.com", temp)).status_code == 401
            assert (await sign_in(admin, "admin@example.com", second.group(1))).status_code == 303
            assert (await admin.get("/admin/pools")).headers["location"] == "/password/change"
            changed = await post_form(
                admin,
                "/password/change",
                {
                    "current_password": second.group(1),
                    "new_password": NEW_PASSWORD,
                    "confirm_password": NEW_PASSWORD,
                },
            )
            assert changed.status_code == 303

            # Pools: exactly those chosen.
            moved = await post_form(owner, page, {"pool": str(team)}, action=f"{page}/pools")
            assert moved.status_code == 303
            listing = (await admin.get("/admin/pools")).text
            assert "team" in listing and "demo" not in listing

            # Deactivate: signed out at once, cannot sign in; reactivate: can again.
            off = await post_form(owner, page, {}, action=f"{page}/deactivate")
            assert off.status_code == 303
            assert (await admin.get("/admin/pools")).headers["location"] == "/login"
            assert (await sign_in(admin, "admin@example.com", NEW_PASSWORD)).status_code == 401
            assert "deactivated" in (await owner.get("/admin/operators")).text
            on = await post_form(owner, page, {}, action=f"{page}/reactivate")
            assert on.status_code == 303
            assert (await sign_in(admin, "admin@example.com", NEW_PASSWORD)).status_code == 303

            # Role: owner, then admin again.
            up = await post_form(owner, page, {"role": "owner"}, action=f"{page}/role")
            assert up.status_code == 303
            assert (await admin.get("/admin/operators")).status_code == 200
            down = await post_form(owner, page, {"role": "admin"}, action=f"{page}/role")
            assert down.status_code == 303
            assert (await admin.get("/admin/operators")).status_code == 403

            # Delete.
            gone = await post_form(owner, page, {}, action=f"{page}/delete")
            assert gone.status_code == 303
            assert (await owner.get(page)).status_code == 404
            actions = await audit_actions(stack)
            for action in (
                "operator.password_reset",
                "operator.assign_pools",
                "operator.deactivate",
                "operator.reactivate",
                "operator.update",
                "operator.delete",
            ):
                assert action in actions, action


async def test_the_last_active_owner_stays(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        me = await operator_id(stack, OWNER_EMAIL)
        page = f"/admin/operators/{me}"
        for action, data in (("role", {"role": "admin"}), ("deactivate", {}), ("delete", {})):
            refused = await post_form(owner, page, data, action=f"{page}/{action}")
            assert refused.status_code == 409, action
            assert "last active owner" in refused.text
        row = await operator_row(stack, OWNER_EMAIL)
        assert row.role == "owner" and row.status == "active"
        assert (await owner.get("/admin/operators")).status_code == 200  # still signed in

        # The store refuses it too (the CLI's path).
        for change in (
            lambda conn: operators.set_role(conn, me, "admin", actor="cli"),
            lambda conn: operators.set_status(conn, me, "disabled", actor="cli"),
            lambda conn: operators.delete_operator(conn, me, actor="cli"),
        ):
            with pytest.raises(ConflictError, match="last active owner"):
                await stack.database.run(change)

        # With a second active owner, the first may step down.
        await stack.database.run(
            lambda conn: operators.create_owner(conn, "second@example.com", OWNER_PASSWORD)
        )
        down = await post_form(owner, page, {"role": "admin"}, action=f"{page}/role")
        assert down.status_code == 303
        assert (await operator_row(stack, OWNER_EMAIL)).role == "admin"
        # ... and a deactivated owner does not count as the other one.
        second = await operator_id(stack, "second@example.com")
        await stack.database.run(lambda conn: operators.set_role(conn, me, "owner", actor="t"))
        await stack.database.run(
            lambda conn: operators.set_status(conn, second, "disabled", actor="t")
        )
        with pytest.raises(ConflictError):
            await stack.database.run(
                lambda conn: operators.set_role(conn, me, "admin", actor="cli")
            )


def operator_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`pooler admin operator ARGV`, through the parser `pooler admin` builds it into."""
    parser = argparse.ArgumentParser(prog="pooler admin")
    register_operators(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["operator", *argv])
    capsys.readouterr()
    assert args.handler(args) == 0
    return capsys.readouterr().out


@pytest.mark.usefixtures("cli_env")
def test_the_cli_manages_operators_and_keeps_the_last_owner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_in_store(lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD))
    run_in_store(lambda conn: store.create_pool(conn, "team"))
    created = json.loads(
        operator_cli(capsys, "create", "--email", "a@example.com", "--pool", "team", "--json")
    )
    assert created["operator"]["must_change_password"] is True
    assert len(created["temporary_password"]) >= 20
    for argv in (("deactivate", OWNER_EMAIL), ("role", OWNER_EMAIL, "admin")):
        with pytest.raises(CommandError, match="last active owner"):
            operator_cli(capsys, *argv)
    out = operator_cli(capsys, "reset-password", "a@example.com")
    assert "temporary password:" in out and created["temporary_password"] not in out
    operator_cli(capsys, "role", "a@example.com", "owner")
    operator_cli(capsys, "deactivate", OWNER_EMAIL)  # another owner is active now
    with pytest.raises(CommandError, match="last active owner"):
        operator_cli(capsys, "delete", "a@example.com")
    operator_cli(capsys, "reactivate", OWNER_EMAIL)
    operator_cli(capsys, "delete", "a@example.com")
    assert [o.email for o in run_in_store(operators.list_operators)] == [OWNER_EMAIL]
