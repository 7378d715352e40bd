"""Invites: `/admin/invites` (an owner, or an admin for their Pools) makes a single-use,
24-hour, revocable onboarding link; `/onboarding/invites/{token}` lets whoever holds it link
their ChatGPT account to that Pool by device code (against the emulator) and shows nothing
else. Used, expired, revoked and unknown links get one identical page; the token is never
stored in clear or logged; a visitor cannot start more than one device sign-in at a time."""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio
from console_support import bootstrap_owner, browser, csrf_of, post_form, sign_in
from harness import Stack, open_stack
from test_account_login import assert_no_tokens, served_by

from pooler import store
from pooler.store import invites, operators
from pooler.store.keys import create_key

LINK_RE = re.compile(
    r'<code class="mono secret">(https?://[^<]+/onboarding/invites/([^<]+))</code>'
)
CODE_RE = re.compile(r'<code class="mono usercode">([^<]+)</code>')
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"


async def make_invite(owner: httpx.AsyncClient, stack: Stack, pool: str) -> tuple[str, str]:
    pool_id = await stack.database.run(lambda conn: store.get_pool(conn, pool).id)
    created = await post_form(owner, "/admin/invites", {"pool": str(pool_id)})
    assert created.status_code == 200, created.text
    found = LINK_RE.search(created.text)
    assert found, "the link is shown"
    path = found.group(1).split("://", 1)[1]
    return path[path.index("/") :], found.group(2)


async def start(visitor: httpx.AsyncClient, path: str) -> httpx.Response:
    page = await visitor.get(path)
    assert page.status_code == 200, page.text
    assert "<nav" not in page.text and "/admin/" not in page.text.replace("/admin/static/", "")
    return await visitor.post(f"{path}/start", data={"csrf_token": csrf_of(page.text)})


async def user_code(visitor: httpx.AsyncClient, path: str) -> str:
    page = await visitor.get(path)
    found = CODE_RE.search(page.text)
    assert found, page.text
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page.text)
    return found.group(1)


async def load_until(visitor: httpx.AsyncClient, path: str, words: str) -> httpx.Response:
    """Reload the page (as its meta refresh does) until it says `words`."""
    with trio.fail_after(20):
        while True:
            page = await visitor.get(path)
            if words in page.text:
                return page
            assert page.status_code == 200, page.text
            await trio.sleep(0.2)


async def invite_rows(stack: Stack) -> list[dict[str, Any]]:
    def load(conn: Any) -> list[dict[str, Any]]:
        cur = conn.execute("SELECT * FROM pool_invites")
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    found: list[dict[str, Any]] = await stack.database.run(load)
    return found


async def test_an_invite_links_an_account_that_then_serves(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_stack(db_url, tmp_path) as stack:
        third = stack.emulator.accounts[2]
        await stack.database.run(
            lambda conn: store.delete_account(conn, store.resolve_account(conn, third.label).id)
        )
        await stack.database.run(lambda conn: store.create_pool(conn, "team"))
        await stack.control("POST", "signin", {"device_interval_seconds": 1})
        async with browser(stack) as owner, browser(stack) as visitor:
            await bootstrap_owner(owner)
            path, token = await make_invite(owner, stack, "team")
            assert len(token) >= 43  # 32 random bytes
            listing = (await owner.get("/admin/invites")).text
            assert token not in listing and "pending" in listing

            page = await visitor.get(path)
            assert page.status_code == 200 and "team" in page.text and "demo" not in page.text
            assert (await start(visitor, path)).status_code == 303
            code = await user_code(visitor, path)
            await stack.control(
                "POST", "device/approve", {"user_code": code, "account_id": third.account_id}
            )
            done = await load_until(visitor, path, "now linked")
            assert done.status_code == 200 and "team" in done.text and "refresh" not in done.text
            again = await visitor.get(path)
            assert again.status_code == 404 and "not valid" in again.text

            assert "used" in (await owner.get("/admin/invites")).text
            [row] = await invite_rows(stack)
            assert row["used_at"] is not None and row["used_account_id"] is not None
            assert row["device_ciphertext"] is None
            events = await stack.database.run(lambda conn: store.list_audit_events(conn, 100))
            [linked] = [e for e in events if e.action == "upstream_account.sign_in"]
            assert linked.details["method"] == "device_code" and linked.details["pool"] == "team"
            assert {"invite.create", "invite.use"} <= {e.action for e in events}

            raw, _ = await stack.database.run(
                lambda conn: create_key(conn, stack.config.secret_key, "team", "k", actor="test")
            )
            await stack.gateway.reload()
            await served_by(stack, raw, third.account_id)

            # The token is nowhere in clear: not in the database, the audit trail or the logs.
            dump = await stack.database.run(
                lambda conn: json.dumps(
                    [
                        conn.execute("SELECT * FROM pool_invites").fetchall(),
                        conn.execute("SELECT * FROM audit_events").fetchall(),
                    ],
                    default=str,
                )
            )
            assert token not in dump
            # The test's own httpx client logs the URLs it asks for and (httpcore) the
            # redirects it gets: those are the visitor's, not the gateway's, logs.
            logged = "\n".join(
                f"{r.getMessage()} {r.args!r} {r.__dict__!r}"
                for r in caplog.records
                if stack.url not in r.getMessage() and not r.name.startswith("httpcore")
            )
            assert any(r.name.startswith("pooler") for r in caplog.records)
            assert token not in logged
            audit_text = json.dumps([e.details for e in events])
            assert_no_tokens(stack, audit_text, dump, logged, done.text)


async def test_used_expired_revoked_and_unknown_links_look_the_same(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_stack(db_url, tmp_path) as stack,
        browser(stack) as owner,
        browser(stack) as visitor,
    ):
        await bootstrap_owner(owner)
        expired, _ = await make_invite(owner, stack, "demo")
        await stack.database.run(
            lambda conn: conn.execute(
                "UPDATE pool_invites SET expires_at = now() - interval '1 second'"
            )
        )
        revoked, _ = await make_invite(owner, stack, "demo")
        rows = await invite_rows(stack)
        pending = max(rows, key=lambda r: r["created_at"])
        listing = await owner.get("/admin/invites")
        answer = await owner.post(
            f"/admin/invites/{pending['id']}/revoke",
            data={"csrf_token": csrf_of(listing.text)},
        )
        assert answer.status_code == 303
        again = await owner.post(
            f"/admin/invites/{pending['id']}/revoke",
            data={"csrf_token": csrf_of(listing.text)},
        )
        assert again.status_code == 409
        used, _ = await make_invite(owner, stack, "demo")
        await stack.database.run(
            lambda conn: conn.execute(
                "UPDATE pool_invites SET used_at = now() WHERE used_at IS NULL"
                " AND revoked_at IS NULL AND expires_at > now()"
            )
        )
        statuses = (await owner.get("/admin/invites")).text
        for word in ("expired", "revoked", "used"):
            assert f">{word}<" in statuses

        bodies = set()
        for path in (expired, revoked, used, "/onboarding/invites/" + "A" * 43):
            page = await visitor.get(path)
            assert page.status_code == 404 and "This link is not valid" in page.text
            assert "demo" not in page.text
            bodies.add(page.text)
            start_answer = await visitor.post(f"{path}/start", data={"csrf_token": "x"})
            assert start_answer.status_code == 403  # no form to post from
        assert len(bodies) == 1
        assert (await visitor.get("/onboarding/invites/" + "%00" * 3)).status_code == 404
        assert (await visitor.get("/onboarding/invites/" + "x" * 5000)).status_code in (
            404,
            414,
            431,
        )
        # Nothing was started upstream for any of them.
        assert (await stack.control("GET", "signin"))["devices"] == []


async def test_denied_and_expired_sign_ins_can_start_again(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.control("POST", "signin", {"device_interval_seconds": 1})
        async with browser(stack) as owner, browser(stack) as visitor:
            await bootstrap_owner(owner)
            path, _ = await make_invite(owner, stack, "demo")
            before = len(await stack.account_ids())

            await start(visitor, path)
            code = await user_code(visitor, path)
            await stack.control("POST", "device/deny", {"user_code": code})
            denied = await load_until(visitor, path, "was refused")
            assert "Start" in denied.text and "refresh" not in denied.text

            await start(visitor, path)
            code = await user_code(visitor, path)
            await stack.control("POST", "device/expire", {"user_code": code})
            expired = await load_until(visitor, path, "expired before")
            assert "Start" in expired.text
            assert len(await stack.account_ids()) == before
            [row] = await invite_rows(stack)
            assert row["used_at"] is None and row["device_ciphertext"] is None

            # Expired on our side too (past the code's expiry, nobody polled).
            await start(visitor, path)
            await user_code(visitor, path)
            await stack.database.run(
                lambda conn: conn.execute(
                    "UPDATE pool_invites SET device_expires_at = now() - interval '1 second'"
                )
            )
            assert "expired before" in (await visitor.get(path)).text


async def test_one_device_sign_in_per_invite_and_a_bounded_number(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_stack(db_url, tmp_path) as stack,
        browser(stack) as owner,
        browser(stack) as visitor,
    ):
        await bootstrap_owner(owner)
        path, _ = await make_invite(owner, stack, "demo")
        page = await visitor.get(path)
        token = csrf_of(page.text)
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(
                    partial(visitor.post, f"{path}/start", data={"csrf_token": token})
                )
        for _ in range(3):
            await visitor.post(f"{path}/start", data={"csrf_token": token})
            await visitor.get(path)
        assert len((await stack.control("GET", "signin"))["devices"]) == 1

        # Past the bound, a start is refused and asks nothing upstream.
        await stack.database.run(
            lambda conn: conn.execute(
                "UPDATE pool_invites SET device_starts = %s, device_expires_at ="
                " now() - interval '1 second'",
                (invites.MAX_DEVICE_STARTS,),
            )
        )
        shown = await visitor.get(path)
        assert "too many times" in shown.text and "Start</button>" not in shown.text
        refused = await visitor.post(f"{path}/start", data={"csrf_token": token})
        assert refused.status_code == 429 and "too many times" in refused.text
        assert len((await stack.control("GET", "signin"))["devices"]) == 1
        # Without the CSRF token, nothing starts at all.
        assert (await visitor.post(f"{path}/start", data={"x": "1"})).status_code == 403


async def test_an_admin_invites_only_to_their_pools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> tuple[UUID, UUID]:
            team = store.create_pool(conn, "<b>team</b>")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            demo = store.get_pool(conn, "demo")
            operators.assign_pools(conn, admin.id, [demo.id], actor="test")
            return demo.id, team.id

        async with browser(stack) as owner, browser(stack) as admin:
            await bootstrap_owner(owner)
            demo, team = await stack.database.run(setup)
            theirs, _ = await make_invite(owner, stack, "<b>team</b>")
            listing = (await owner.get("/admin/invites")).text
            assert "<b>team</b>" not in listing and "&lt;b&gt;team&lt;/b&gt;" in listing
            async with browser(stack) as visitor:
                public = await visitor.get(theirs)
                assert "&lt;b&gt;team&lt;/b&gt;" in public.text

            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            page = await admin.get("/admin/invites")
            assert page.status_code == 200 and "team" not in page.text
            token = csrf_of(page.text)
            refused = await admin.post(
                "/admin/invites",
                data={"csrf_token": token, "form_once": "a" * 22, "pool": str(team)},
            )
            assert refused.status_code == 404
            [other] = await invite_rows(stack)
            refused = await admin.post(
                f"/admin/invites/{other['id']}/revoke", data={"csrf_token": token}
            )
            assert refused.status_code == 404
            assert len(await invite_rows(stack)) == 1
            assert (await invite_rows(stack))[0]["revoked_at"] is None
            no_csrf = await admin.post("/admin/invites", data={"pool": str(demo)})
            assert no_csrf.status_code == 403 and len(await invite_rows(stack)) == 1
            mine = await admin.post(
                "/admin/invites",
                data={"csrf_token": token, "form_once": "b" * 22, "pool": str(demo)},
            )
            assert mine.status_code == 200 and LINK_RE.search(mine.text)
            assert len(await invite_rows(stack)) == 2
