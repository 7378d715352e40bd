"""Other people in a real browser, and the forms' error paths: an invite link completed in a
second browser without any operator session; an admin created by the owner who changes the
temporary password and sees only its Pool; a bad auth.json, a duplicate Pool name and a
duplicate key name refused beside their fields."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from browser_support import Console, require_playwright, run_scenario, sign_in, sign_out
from harness import Stack, open_stack

from pooler import store
from pooler.store import operators
from pooler.store.keys import create_key

require_playwright()
from browser_steps import (  # noqa: E402
    DEVICE_INTERVAL_S,
    HOME,
    OWNER_EMAIL,
    OWNER_NAME,
    OWNER_PASSWORD,
    WAIT_MS,
    emulator,
    heading,
    nav,
    open_add_account,
)
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e

INVITED = "account-4"  # in the emulator, not in the gateway until the invite is used
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "the admin's own password"


async def create_owner(stack: Stack) -> None:
    await stack.database.run(
        lambda conn: operators.create_owner(
            conn, OWNER_EMAIL, OWNER_PASSWORD, display_name=OWNER_NAME
        )
    )


async def audit_actions(stack: Stack) -> list[str]:
    events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
    return [event.action for event in events]


def invite(console: Console, stack: Stack) -> None:
    owner = console.page()
    sign_in(owner, OWNER_EMAIL, OWNER_PASSWORD)
    expect(owner).to_have_url(HOME)
    nav(owner, "Invites")
    console.look(owner, "invites")
    owner.get_by_label("Pool", exact=True).select_option(label="demo")
    owner.get_by_role("button", name="Create invite link").click()
    expect(owner.get_by_role("status")).to_contain_text("Invite to demo created")
    link = owner.locator(".once code").inner_text()
    assert "/onboarding/invites/" in link, link
    expect(owner.get_by_role("row").filter(has_text="pending")).to_have_count(1)
    console.look(owner, "invite-created")

    guest = console.page()  # another browser, no operator session
    guest.goto(link)
    expect(heading(guest)).to_have_text("Link your ChatGPT account")
    expect(guest.get_by_role("navigation")).to_have_count(0)  # nothing of the console
    console.look(guest, "onboarding")
    guest.get_by_role("button", name="Start", exact=True).click()
    code = guest.locator(".usercode").inner_text()
    console.look(guest, "onboarding-code")
    emulator(stack, "POST", "device/approve", {"user_code": code, "account_id": INVITED})
    expect(guest.get_by_role("status")).to_contain_text(
        "Your ChatGPT account is now linked to demo", timeout=WAIT_MS
    )
    console.look(guest, "onboarding-done")
    guest.goto("/admin/pools")  # the link gave no way into the console
    expect(guest).to_have_url(re.compile(r"/login$"))

    nav(owner, "Invites")  # not a reload: that page answered the form's POST
    expect(owner.get_by_role("row").filter(has_text="pending")).to_have_count(0)
    console.look(owner, "invite-used")
    nav(owner, "Pools")
    row = owner.get_by_role("row").filter(has=owner.get_by_role("link", name="demo", exact=True))
    expect(row).to_contain_text("/ 4")  # usable / accounts
    nav(owner, "Upstreams")
    expect(owner.get_by_role("row").filter(has_text="demo")).to_have_count(4)


async def test_an_invite_link_is_completed_in_a_browser_without_a_session(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path, accounts=4) as stack:
        await create_owner(stack)
        ids = await stack.account_ids()
        await stack.database.run(lambda conn: store.delete_account(conn, UUID(ids[INVITED])))
        await stack.gateway.reload()
        await stack.control("POST", "signin", {"device_interval_seconds": DEVICE_INTERVAL_S})
        await run_scenario(partial(invite, stack=stack), stack.url, tmp_path, chromium)
        invited = next(a for a in stack.emulator.accounts if a.label == INVITED)
        assert invited.email in await stack.account_ids()  # labelled with its email
        actions = await audit_actions(stack)
    assert "invite.create" in actions and "invite.use" in actions, actions


def admin_role(console: Console, ids: dict[str, str]) -> None:
    owner = console.page()
    sign_in(owner, OWNER_EMAIL, OWNER_PASSWORD)
    expect(owner).to_have_url(HOME)
    demo = owner.get_by_role("link", name="demo", exact=True).get_attribute("href")
    assert demo
    nav(owner, "Operators")
    console.look(owner, "operators")
    owner.get_by_label("Email", exact=True).fill(ADMIN_EMAIL)
    owner.get_by_label("Display name", exact=True).fill("Team Admin")
    owner.get_by_label("Role", exact=True).select_option(value="admin")
    owner.get_by_label("team", exact=True).check()
    owner.get_by_role("button", name="Add operator").click()
    expect(owner.get_by_role("status")).to_contain_text(f"{ADMIN_EMAIL} was created")
    temporary = owner.locator(".once code").inner_text()
    assert len(temporary) >= 12
    expect(owner.get_by_role("row").filter(has_text=ADMIN_EMAIL)).to_contain_text("team")
    console.look(owner, "operator-created")

    admin = console.page()
    sign_in(admin, ADMIN_EMAIL, temporary)
    expect(admin).to_have_url(re.compile(r"/password/change$"))
    console.look(admin, "password-change")
    admin.goto("/admin/pools")  # nothing else until the password is changed
    expect(admin).to_have_url(re.compile(r"/password/change$"))
    admin.get_by_label("Current password", exact=True).fill(temporary)
    admin.get_by_label("New password", exact=True).fill(ADMIN_PASSWORD)
    admin.get_by_label("Confirm new password", exact=True).fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Change password").click()
    expect(admin).to_have_url(HOME)

    # Only its Pool, its accounts and its keys; the owner-only pages are not offered.
    expect(admin.get_by_role("link", name="team", exact=True)).to_be_visible()
    expect(admin.get_by_text("demo", exact=True)).to_have_count(0)
    expect(admin.get_by_role("navigation", name="Console")).not_to_contain_text("Operators")
    console.look(admin, "admin-pools")
    nav(admin, "Upstreams")
    expect(admin.get_by_role("link", name="account-3", exact=True)).to_be_visible()
    expect(admin.get_by_role("link", name="account-1", exact=True)).to_have_count(0)
    expect(admin.locator("main")).not_to_contain_text("demo")
    console.look(admin, "admin-upstreams")
    nav(admin, "API keys")
    expect(admin.get_by_role("row").filter(has_text="team key")).to_have_count(1)
    expect(admin.locator("main table")).not_to_contain_text("demo")
    console.look(admin, "admin-api-keys")

    # Another Pool's pages do not exist for it; an owner-only page is forbidden.
    for address in (demo, f"/admin/upstreams/{ids['account-1']}"):
        answer = admin.goto(address)
        assert answer is not None and answer.status == 404, (address, answer and answer.status)
        expect(heading(admin)).to_have_text("Not found")
    console.look(admin, "admin-other-pool")
    answer = admin.goto("/admin/operators")
    assert answer is not None and answer.status == 403
    expect(heading(admin)).to_have_text("Forbidden")
    admin.goto("/admin/pools")
    sign_out(admin)


async def test_an_admin_sees_only_its_pool(db_url: str, tmp_path: Path, chromium: str) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await create_owner(stack)
        ids = await stack.account_ids()

        def team(conn: Any) -> None:
            store.create_pool(conn, "team")
            store.set_assignment(conn, "team", UUID(ids["account-3"]), actor="test")
            create_key(conn, stack.config.secret_key, "team", "team key", actor="test")

        await stack.database.run(team)
        await stack.gateway.reload()
        await run_scenario(partial(admin_role, ids=ids), stack.url, tmp_path, chromium)
        changed = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT must_change_password, role FROM operators WHERE email = %s",
                (ADMIN_EMAIL,),
            ).fetchone()
        )
    assert tuple(changed) == (False, "admin")


def form_errors(console: Console) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(HOME)
    nav(page, "Pools")

    # A Pool name that exists: refused beside the field, the name kept.
    page.get_by_label("Name", exact=True).fill("demo")
    page.get_by_role("button", name="Create Pool").click()
    name = page.get_by_label("Name", exact=True)
    expect(page.locator("#f-name-error")).to_contain_text("already exists")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_attribute("aria-describedby", re.compile(r"f-name-error"))
    expect(name).to_have_value("demo")
    console.look(page, "pool-duplicate")

    # A file that is not an auth.json: refused beside the field.
    open_add_account(page, "demo")
    for content, words in (
        (b"{not json", "cannot read the auth.json"),
        (json.dumps({"OPENAI_API_KEY": "sk-x"}).encode(), "is not a ChatGPT sign-in"),
    ):
        page.get_by_label("auth.json file").set_input_files(
            {"name": "auth.json", "mimeType": "application/json", "buffer": content}
        )
        page.get_by_role("button", name="Upload", exact=True).click()
        error = page.locator("#f-auth-json-error")
        expect(error).to_contain_text(words)
        expect(page.get_by_label("auth.json file")).to_have_attribute(
            "aria-describedby", re.compile(r"f-auth-json-error")
        )
    console.look(page, "auth-json-refused")

    # A key name already used in the Pool: refused beside the field.
    nav(page, "API keys")
    form = page.locator("form", has=page.get_by_role("button", name="Create key"))
    form.get_by_label("Pool", exact=True).select_option(label="demo")
    form.get_by_label("Name", exact=True).fill("demo")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("alert")).to_contain_text("The key was not created")
    expect(page.locator("#f-name-error")).to_contain_text("already has an active key")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    console.look(page, "key-duplicate")


async def test_forms_refuse_a_bad_auth_json_and_duplicate_names(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await create_owner(stack)
        await run_scenario(form_errors, stack.url, tmp_path, chromium)
        counts = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT (SELECT count(*) FROM pools), (SELECT count(*) FROM upstream_accounts),"
                " (SELECT count(*) FROM pool_api_keys)"
            ).fetchone()
        )
    assert tuple(counts) == (1, 3, 1)  # nothing was created
