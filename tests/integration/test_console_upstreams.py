"""The console's Upstreams pages against the real stack (emulator, Postgres, gateway): the
list and an account's page with its live state and verdict, the actions (CSRF, audit, an
admin's Pool scope), and adding accounts three ways (auth.json upload, browser PKCE, device
code), each with its refusals, a re-link that does not duplicate, and an added account
serving a request through the gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, csrf_of, sign_in
from harness import Stack, open_stack, responses_body

from pooler import store
from pooler.emulator.authjson import auth_json_for
from pooler.store import operators
from pooler.store.keys import create_key

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
RESPONSES = "/backend-api/codex/responses"
AUTHORIZE = re.compile(r'href="(http://[^"]+/oauth/authorize\?[^"]+)"')
USER_CODE = re.compile(r'class="user-code mono">([^<]+)<')
FLOW = re.compile(r"/admin/upstreams/sign-in/([A-Za-z0-9_-]+)$")


async def owner_stack_setup(stack: Stack) -> None:
    await stack.database.run(lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD))


async def ids_by_label(stack: Stack) -> dict[str, UUID]:
    rows = await stack.database.run(
        lambda conn: conn.execute("SELECT label, id FROM upstream_accounts").fetchall()
    )
    return {label: account_id for label, account_id in rows}


async def lifecycle_of(stack: Stack, account_id: UUID) -> str:
    return str(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT lifecycle FROM upstream_accounts WHERE id = %s", (account_id,)
            ).fetchone()[0]
        )
    )


async def audited(stack: Stack, action: str) -> list[store.AuditEvent]:
    events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
    return [e for e in events if e.action == action]


async def account_count(stack: Stack) -> int:
    return int(
        await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM upstream_accounts").fetchone()[0]
        )
    )


async def post(client: httpx.AsyncClient, page: str, action: str, **data: str) -> httpx.Response:
    token = csrf_of((await client.get(page)).text)
    return await client.post(action, data={"csrf_token": token, **data})


async def serve_one(stack: Stack, key: str) -> None:
    async with stack.client(headers={"Authorization": f"Bearer {key}"}) as client:
        answer = await client.post(RESPONSES, json=responses_body())
        assert answer.status_code == 200, answer.text


async def served_by(stack: Stack, key: str, chatgpt_account_id: str, *, fresh: bool = True) -> None:
    """Turns through the gateway until one reaches the account upstream, with tokens a
    sign-in minted when `fresh` (the gateway picks up new accounts and tokens within a
    second)."""
    async with stack.client(headers={"Authorization": f"Bearer {key}"}) as client:
        with trio.fail_after(20):
            while True:
                answer = await client.post(RESPONSES, json=responses_body())
                assert answer.status_code == 200, answer.text
                last = (await stack.upstream_requests())[-1]
                if last["account_id"] == chatgpt_account_id and (last["token_fresh"] or not fresh):
                    return
                await trio.sleep(0.1)


async def test_list_and_detail_show_live_state_and_the_verdict(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await owner_stack_setup(stack)
        ids = await ids_by_label(stack)
        for _ in range(3):
            await serve_one(stack, stack.key)
        await stack.gateway.flush_write_behind()
        async with browser(stack) as owner:
            await sign_in(owner)
            listing = await owner.get("/admin/upstreams")
            assert listing.status_code == 200
            for fake in stack.emulator.accounts:
                assert fake.label in listing.text
                assert fake.email not in listing.text  # masked
                assert f"{fake.email[:2]}•••@emulator.test" in listing.text
            assert listing.text.count(">yes<") == 3
            assert re.search(r"5h \d+%", listing.text)

            with_quota = await stack.database.run(
                lambda conn: conn.execute("SELECT account_id FROM quota_windows").fetchone()[0]
            )
            first = next(f for f in stack.emulator.accounts if ids[f.label] == with_quota)
            page = await owner.get(f"/admin/upstreams/{ids[first.label]}")
            assert page.status_code == 200
            text = page.text
            assert "every check of the router passes" in text
            assert "<meter" in text and "% used" in text and "from " in text
            for route_class in ("responses", "compact", "control"):
                assert f'data-label="Route class">{route_class}<' in text
            assert re.search(r"\d+ of \d+ leases", text) and "demo" in text

            # pausing shows who paused it and when, in the router's words
            paused = await post(
                owner,
                f"/admin/upstreams/{ids[first.label]}",
                f"/admin/upstreams/{ids[first.label]}/pause",
                reason="<b>maintenance</b>",
            )
            assert paused.status_code == 303
            await stack.gateway.reload()
            with trio.fail_after(10):
                while True:
                    text = (await owner.get(f"/admin/upstreams/{ids[first.label]}")).text
                    if "not_active" in text:
                        break
                    await trio.sleep(0.05)
            assert f"paused by {OWNER_EMAIL} at " in text
            assert "&lt;b&gt;maintenance&lt;/b&gt;" in text and "<b>maintenance" not in text
            listing = await owner.get("/admin/upstreams")
            assert listing.text.count(">yes<") == 2 and listing.text.count(">no<") == 1

            # an account in no active Pool: not running here
            await stack.database.run(
                lambda conn: store.set_assignment(
                    conn, "demo", ids[first.label], status="disabled", actor="test"
                )
            )
            await stack.gateway.reload()
            text = (await owner.get(f"/admin/upstreams/{ids[first.label]}")).text
            assert "assigned to no active Pool" in text

            assert (await owner.get(f"/admin/upstreams/{UUID(int=1)}")).status_code == 404


async def test_actions_are_audited_and_need_the_csrf_token(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await owner_stack_setup(stack)
        await stack.database.run(lambda conn: store.create_pool(conn, "team"))
        ids = await ids_by_label(stack)
        account = ids["account-2"]
        page = f"/admin/upstreams/{account}"
        async with browser(stack) as owner:
            await sign_in(owner)
            refused = await owner.post(f"{page}/pause", data={"reason": "x"})
            assert refused.status_code == 403
            assert await lifecycle_of(stack, account) == "active"

            assert (await post(owner, page, f"{page}/pause")).status_code == 303
            assert await lifecycle_of(stack, account) == "paused"
            dead = ids["account-3"]  # the store's rule, shown beside the page
            await stack.database.run(
                lambda conn: store.set_lifecycle(conn, dead, "reauth_required", "refused")
            )
            refused = await post(
                owner, f"/admin/upstreams/{dead}", f"/admin/upstreams/{dead}/resume"
            )
            assert refused.status_code == 400 and "cannot resume" in refused.text
            assert (await post(owner, page, f"{page}/resume")).status_code == 303
            assert await lifecycle_of(stack, account) == "active"
            moves = await audited(stack, "upstream_account.lifecycle")
            assert sorted(e.details["to"] for e in moves if e.actor != "system") == [
                "active",
                "paused",
            ]
            assert {e.actor for e in moves} == {OWNER_EMAIL, "system"}

            refreshed = await post(owner, page, f"{page}/refresh")
            assert refreshed.status_code == 200 and "Tokens refreshed." in refreshed.text
            [event] = await audited(stack, "account.refresh")
            assert event.actor == OWNER_EMAIL and event.details["ok"] is True
            assert "never" not in refreshed.text.split("Last refresh")[1][:80]
            # the running account actor serves with the refreshed tokens
            await stack.database.run(lambda conn: store.pause_account(conn, ids["account-1"]))
            await stack.gateway.reload()
            await served_by(stack, stack.key, stack.emulator.accounts[1].account_id)

            team = await stack.database.run(lambda conn: store.get_pool(conn, "team"))
            assigned = await post(owner, page, f"{page}/assign", pool=str(team.id), weight="7")
            assert assigned.status_code == 303
            weights = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT status, weight FROM pool_assignments WHERE pool_id = %s"
                    " AND account_id = %s",
                    (team.id, account),
                ).fetchone()
            )
            assert weights == ("active", 7)
            bad = await post(owner, page, f"{page}/assign", pool=str(team.id), weight="-3")
            assert bad.status_code == 400 and "weight must be between" in bad.text
            assert (
                await post(owner, page, f"{page}/unassign", pool=str(team.id))
            ).status_code == 303
            status = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT status FROM pool_assignments WHERE pool_id = %s AND account_id = %s",
                    (team.id, account),
                ).fetchone()[0]
            )
            assert status == "disabled"
            assert all(
                e.actor == OWNER_EMAIL for e in await audited(stack, "pool.assignment_update")
            )

            confirm = await owner.get(f"{page}/delete")
            assert confirm.status_code == 200 and "Delete account-2?" in confirm.text
            assert (await owner.post(f"{page}/delete", data={"x": "1"})).status_code == 403
            assert (await post(owner, f"{page}/delete", f"{page}/delete")).status_code == 303
            assert "account-2" not in await ids_by_label(stack)
            [deleted] = await audited(stack, "account.delete")
            assert deleted.actor == OWNER_EMAIL


async def test_an_admin_acts_only_on_the_accounts_of_their_pools(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await owner_stack_setup(stack)
        ids = await ids_by_label(stack)
        extra = stack.emulator.accounts[2]

        def setup(conn: Any) -> tuple[UUID, UUID]:
            mine = store.create_pool(conn, "mine")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            demo = store.get_pool(conn, "demo")
            # account-3 serves both Pools; account-1 and account-2 only demo
            store.set_assignment(conn, "mine", ids[extra.label], actor="test")
            return mine.id, demo.id

        mine, demo = await stack.database.run(setup)
        theirs = ids["account-1"]
        async with browser(stack) as admin:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            listing = (await admin.get("/admin/upstreams")).text
            assert extra.label in listing and "account-1" not in listing
            assert "demo" not in listing  # another Pool's name is not shown either
            assert (await admin.get(f"/admin/upstreams/{theirs}")).status_code == 404
            token = csrf_of(listing)
            for action, data in (
                ("pause", {}),
                ("resume", {}),
                ("refresh", {}),
                ("delete", {}),
                ("assign", {"pool": str(mine), "weight": "3"}),
                ("unassign", {"pool": str(demo)}),
            ):
                answer = await admin.post(
                    f"/admin/upstreams/{theirs}/{action}", data={"csrf_token": token, **data}
                )
                assert answer.status_code == 404, action
            own = f"/admin/upstreams/{ids[extra.label]}"
            # its own account cannot be moved into another Pool
            answer = await admin.post(
                f"{own}/assign", data={"csrf_token": token, "pool": str(demo), "weight": "3"}
            )
            assert answer.status_code == 404
            # nor deleted while it serves a Pool the admin cannot see
            assert (
                await admin.post(f"{own}/delete", data={"csrf_token": token})
            ).status_code == 403
            started = await admin.post(
                "/admin/upstreams/new/browser",
                data={"csrf_token": token, "pool": str(demo)},
            )
            assert started.status_code == 404
            assert (await admin.get(f"/admin/upstreams/new?pool={demo}")).status_code == 404
        assert await account_count(stack) == 3
        assert await lifecycle_of(stack, theirs) == "active"
        changes = await audited(stack, "pool.assignment_update")
        assert all(e.actor == "test" for e in changes)


async def test_upload_an_auth_json(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, accounts=3) as stack:
        await owner_stack_setup(stack)
        third = stack.emulator.accounts[2]
        ids = await ids_by_label(stack)
        await stack.database.run(lambda conn: store.delete_account(conn, ids[third.label]))
        team = await stack.database.run(lambda conn: store.create_pool(conn, "team"))
        page = f"/admin/upstreams/new?pool={team.id}"
        async with browser(stack) as owner:
            await sign_in(owner)
            shown = await owner.get(page)
            assert shown.status_code == 200 and "auth.json file" in shown.text
            token = csrf_of(shown.text)

            async def upload(content: bytes, **fields: str) -> httpx.Response:
                return await owner.post(
                    "/admin/upstreams/new/import",
                    data={"pool": str(team.id), **fields},
                    files={"auth_json": ("auth.json", content, "application/json")},
                )

            good = json.dumps(auth_json_for(third)).encode()
            assert (await upload(good)).status_code == 403  # no CSRF token
            assert (await upload(good, csrf_token="forged")).status_code == 403
            for content, words in (
                (b"{not json", "cannot read the auth.json"),
                (json.dumps({"OPENAI_API_KEY": "sk-x"}).encode(), "is not a ChatGPT sign-in"),
                (
                    json.dumps({"tokens": {"access_token": "a"}}).encode(),
                    "refresh_token is missing",
                ),
            ):
                refused = await upload(content, csrf_token=token)
                assert refused.status_code == 400 and words in refused.text, refused.text
                assert 'id="f-auth-json-error"' in refused.text
            too_big = await upload(b" " * (200 * 1024) + good, csrf_token=token)
            assert too_big.status_code == 413
            assert await account_count(stack) == 2

            added = await upload(good, csrf_token=token, label="<i>uploaded</i>")
            assert added.status_code == 303
            account_id = added.headers["location"].rsplit("/", 1)[1]
            shown = await owner.get(added.headers["location"])
            assert shown.status_code == 200 and "<i>uploaded" not in shown.text
            assert "&lt;i&gt;uploaded&lt;/i&gt;" in shown.text
            assert await account_count(stack) == 3
            # the same file again: the same account, not a second one
            again = await upload(good, csrf_token=token)
            assert again.headers["location"].endswith(account_id)
            assert await account_count(stack) == 3
            events = await audited(stack, "upstream_account.import")
            mine = [e for e in events if e.actor == OWNER_EMAIL]
            assert sorted(e.details["created"] for e in mine) == [False, True]
            assert mine[0].details["pool"] == "team"

        raw, _ = await stack.database.run(
            lambda conn: create_key(conn, stack.config.secret_key, "team", "k", actor="test")
        )
        await stack.gateway.reload()
        await served_by(stack, raw, third.account_id, fresh=False)


async def start_browser(owner: httpx.AsyncClient, pool: UUID, relink: str = "") -> str:
    token = csrf_of((await owner.get(f"/admin/upstreams/new?pool={pool}")).text)
    started = await owner.post(
        "/admin/upstreams/new/browser",
        data={"csrf_token": token, "pool": str(pool), "relink": relink},
    )
    assert started.status_code == 303, started.text
    return str(started.headers["location"])


async def land(authorize_url: str, **choices: str) -> str:
    """The operator's browser: sign in at the authorize URL, land on the callback."""
    extra = "".join(f"&{name}={value}" for name, value in choices.items())
    async with httpx.AsyncClient(timeout=10) as other:
        answer = await other.get(authorize_url.replace("&amp;", "&") + extra)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


async def test_browser_sign_in(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await owner_stack_setup(stack)
        third = stack.emulator.accounts[2]
        ids = await ids_by_label(stack)
        await stack.database.run(lambda conn: store.delete_account(conn, ids[third.label]))
        team = await stack.database.run(lambda conn: store.create_pool(conn, "team"))
        async with browser(stack) as owner, browser(stack) as other:
            await sign_in(owner)
            await sign_in(other)
            flow = await start_browser(owner, team.id)
            page = await owner.get(flow)
            assert page.status_code == 200 and "Callback URL" in page.text
            found = AUTHORIZE.search(page.text)
            assert found, page.text
            authorize = found.group(1)
            assert "state=" in authorize and "code_challenge_method=S256" in authorize
            assert (await other.get(flow)).status_code == 404  # another session's sign-in

            landed = await land(authorize, emulator_account=third.label)
            token = csrf_of(page.text)
            forged = re.sub(r"state=[^&]+", "state=forged", landed)
            wrong = await owner.post(flow, data={"csrf_token": token, "callback_url": forged})
            assert wrong.status_code == 400 and "state does not match" in wrong.text
            assert await account_count(stack) == 2
            assert (await owner.post(flow, data={"callback_url": landed})).status_code == 403

            done = await owner.post(flow, data={"csrf_token": token, "callback_url": landed})
            assert done.status_code == 200 and "the account was added to team" in done.text
            assert await account_count(stack) == 3
            [event] = await audited(stack, "upstream_account.sign_in")
            assert event.actor == OWNER_EMAIL and event.details["method"] == "browser"

            # denied at the auth server
            flow = await start_browser(owner, team.id)
            page = await owner.get(flow)
            found = AUTHORIZE.search(page.text)
            assert found
            landed = await land(found.group(1), emulator_deny="1")
            denied = await owner.post(
                flow, data={"csrf_token": csrf_of(page.text), "callback_url": landed}
            )
            assert denied.status_code == 400 and "denied" in denied.text

            # a re-link that signs in as another account changes nothing
            relink = await start_browser(owner, team.id, str(ids["account-1"]))
            page = await owner.get(relink)
            found = AUTHORIZE.search(page.text)
            assert found
            landed = await land(found.group(1), emulator_account="account-2")
            refused = await owner.post(
                relink, data={"csrf_token": csrf_of(page.text), "callback_url": landed}
            )
            assert refused.status_code == 400 and "not the account being re-linked" in refused.text
            assert len(await audited(stack, "upstream_account.sign_in")) == 1

        raw, _ = await stack.database.run(
            lambda conn: create_key(conn, stack.config.secret_key, "team", "k", actor="test")
        )
        await stack.gateway.reload()
        await served_by(stack, raw, third.account_id)


async def start_device(owner: httpx.AsyncClient, pool: str, relink: str = "") -> str:
    token = csrf_of((await owner.get(f"/admin/upstreams/new?pool={pool}")).text)
    started = await owner.post(
        "/admin/upstreams/new/device",
        data={"csrf_token": token, "pool": pool, "relink": relink},
    )
    assert started.status_code == 303, started.text
    return str(started.headers["location"])


async def wait_for(owner: httpx.AsyncClient, flow: str, words: str) -> str:
    """Load the page as its meta refresh would, until it says `words`."""
    with trio.fail_after(30):
        while True:
            page = await owner.get(flow)
            assert page.status_code == 200
            if words in page.text:
                return page.text
            refresh = re.search(r'http-equiv="refresh" content="(\d+)"', page.text)
            assert refresh, page.text
            await trio.sleep(0.2)


async def test_device_code_sign_in(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await owner_stack_setup(stack)
        await stack.control("POST", "signin", {"device_interval_seconds": 1})
        ids = await ids_by_label(stack)
        first = stack.emulator.accounts[0]
        await stack.database.run(
            lambda conn: store.set_lifecycle(conn, ids[first.label], "reauth_required", "refused")
        )
        await stack.gateway.reload()
        demo = await stack.database.run(lambda conn: store.get_pool(conn, "demo"))
        async with browser(stack) as owner:
            await sign_in(owner)
            detail = (await owner.get(f"/admin/upstreams/{ids[first.label]}")).text
            assert "needs a new sign-in" in detail and "Re-link" in detail

            flow = await start_device(owner, str(demo.id), str(ids[first.label]))
            page = await owner.get(flow)
            code = USER_CODE.search(page.text)
            assert code and "/codex/device" in page.text
            assert 'http-equiv="refresh" content="1"' in page.text
            await stack.control("POST", "device/approve", {"user_code": code.group(1)})
            done = await wait_for(owner, flow, "re-linked in demo")
            assert "http-equiv" not in done
            assert await account_count(stack) == 3
            assert await lifecycle_of(stack, ids[first.label]) == "active"
            [event] = await audited(stack, "upstream_account.sign_in")
            assert event.details["created"] is False
            assert event.details["method"] == "device_code"

            for action, words in (("deny", "denied"), ("expire", "expired")):
                flow = await start_device(owner, str(demo.id))
                code = USER_CODE.search((await owner.get(flow)).text)
                assert code
                await stack.control("POST", f"device/{action}", {"user_code": code.group(1)})
                await wait_for(owner, flow, words)
            # nobody approves: the page gives up once the code's lifetime is over
            await stack.control("POST", "signin", {"device_ttl_seconds": 2})
            flow = await start_device(owner, str(demo.id))
            await wait_for(owner, flow, "device code expired")
            assert len(await audited(stack, "upstream_account.sign_in")) == 1

        for other in stack.emulator.accounts[1:]:
            await stack.database.run(
                lambda conn, label=other.label: store.pause_account(conn, ids[label])
            )
        await stack.gateway.reload()
        await served_by(stack, stack.key, first.account_id)
