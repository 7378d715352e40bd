"""The operator's main path in a real browser: the first owner → a new Pool → an account
added each of the three ways (auth.json upload, browser sign-in with PKCE, device code) →
a key (shown once) → the real Codex CLI through the gateway with that key → the serving
account's quota bars move → the key rotated (the old secret refused)."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from uuid import UUID

import pytest
from browser_support import Console, require_playwright, run_scenario
from harness import Stack, open_stack, require_tool

from pooler import store
from pooler.crypto import DISPLAY_PREFIX_LEN
from pooler.emulator.authjson import auth_json_for

require_playwright()
from browser_steps import (  # noqa: E402
    DEVICE_INTERVAL_S,
    HOME,
    OWNER_EMAIL,
    OWNER_NAME,
    OWNER_PASSWORD,
    WAIT_MS,
    codex_exec,
    emulator,
    gateway_status,
    heading,
    land_on_callback,
    last_upstream_account,
    meter_values,
    nav,
    open_add_account,
    reload_until,
)
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.e2e

POOL = "team"
# The emulator's accounts 4-6 are not in the gateway when the scenario starts: one is
# added per way.
UPLOADED, BROWSER, DEVICE = "account-4", "account-5", "account-6"
ACCOUNT_PAGE = re.compile(r"/admin/upstreams/[0-9a-f-]{36}$")
PROMPT = "Reply with exactly: hello from the team pool"


def bootstrap_and_create_pool(console: Console, page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/bootstrap$"))
    page.get_by_label("Email", exact=True).fill(OWNER_EMAIL)
    page.get_by_label("Display name", exact=True).fill(OWNER_NAME)
    page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Create owner").click()
    expect(page).to_have_url(HOME)
    nav(page, "Pools")
    page.get_by_label("Name", exact=True).fill(POOL)
    page.get_by_role("button", name="Create Pool").click()
    expect(heading(page)).to_have_text(POOL)
    expect(page.locator(".figures")).to_contain_text("/ 0")  # no account yet
    console.look(page, "pool-created")


def upload_auth_json(console: Console, page: Page, auth_json: Path) -> str:
    """The first way: the account's auth.json. The account's page address."""
    open_add_account(page, POOL)
    console.look(page, "add-account")
    page.get_by_label("auth.json file").set_input_files(auth_json)
    page.get_by_label("Label", exact=True).fill(UPLOADED)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(heading(page)).to_have_text(UPLOADED)
    expect(page.locator("#h-pools + .scroll")).to_contain_text(POOL)
    console.look(page, "account-uploaded")
    return page.url


def browser_sign_in(console: Console, page: Page) -> str:
    """The second way: open the authorize URL the page shows (a second tab), sign in there
    (the emulator's `emulator_account` picks who), copy the localhost:1455 address it lands
    on (nothing listens there: the tab shows an error page) into the page."""
    open_add_account(page, POOL)
    page.get_by_role("button", name="Start a browser sign-in").click()
    expect(heading(page)).to_have_text(f"Sign-in for {POOL}")
    console.look(page, "browser-sign-in")
    authorize = page.get_by_role("link", name="Open ChatGPT's sign-in page")
    href = authorize.get_attribute("href")
    assert href and "code_challenge_method=S256" in href and "state=" in href, href

    landed = land_on_callback(page, href, emulator_account=BROWSER)
    assert "code=" in landed, landed

    page.get_by_label("Callback URL", exact=True).fill(landed)
    page.get_by_role("button", name="Finish the sign-in").click()
    expect(page.get_by_role("status")).to_have_text(f"Done: the account was added to {POOL}.")
    console.look(page, "browser-sign-in-done")
    page.get_by_role("link", name="See the account").click()
    expect(page).to_have_url(ACCOUNT_PAGE)
    expect(page.locator(".facts")).to_contain_text("active")
    return page.url


def device_code(console: Console, page: Page, stack: Stack) -> str:
    """The third way: the page shows a user code; the person approves it at the auth server
    (here the emulator's control endpoint); the page completes by itself (meta refresh)."""
    open_add_account(page, POOL)
    page.get_by_role("button", name="Sign in with a device code").click()
    code = page.locator(".user-code").inner_text()
    expect(page.get_by_role("status")).to_contain_text("Waiting for the sign-in")
    console.look(page, "device-code")
    emulator(stack, "POST", "device/approve", {"user_code": code, "account_id": DEVICE})
    expect(page.get_by_role("status")).to_have_text(
        f"Done: the account was added to {POOL}.", timeout=WAIT_MS
    )
    assert page.locator("meta[http-equiv=refresh]").count() == 0  # it stopped checking
    console.look(page, "device-code-done")
    page.get_by_role("link", name="See the account").click()
    expect(page).to_have_url(ACCOUNT_PAGE)
    return page.url


def create_key(console: Console, page: Page) -> str:
    """API keys → Create a key for the Pool; the raw key read from the page that shows it
    once. The page left is the key's own page."""
    nav(page, "API keys")
    console.look(page, "api-keys")
    form = page.locator("form", has=page.get_by_role("button", name="Create key"))
    form.get_by_label("Pool", exact=True).select_option(label=POOL)
    form.get_by_label("Name", exact=True).fill("laptop")
    page.get_by_role("button", name="Create key").click()
    expect(heading(page)).to_have_text("Key created")
    raw = page.get_by_label(re.compile(r"^Pool API key")).input_value()
    assert raw.startswith("sk-cxp-"), "no key shown"
    expect(page.get_by_role("button", name="Copy").first).to_be_visible()  # copy.js ran
    console.look(page, "key-created")
    page.get_by_role("link", name="Done", exact=True).click()
    expect(heading(page)).to_contain_text(raw[:DISPLAY_PREFIX_LEN])
    return raw


def main_path(console: Console, stack: Stack, files: Path, codex: str) -> None:
    page = console.page()
    bootstrap_and_create_pool(console, page)
    accounts = {
        UPLOADED: upload_auth_json(console, page, files / "auth.json"),
        BROWSER: browser_sign_in(console, page),
        DEVICE: device_code(console, page, stack),
    }
    nav(page, "Upstreams")
    expect(page.get_by_role("row").filter(has_text=POOL)).to_have_count(3)
    console.look(page, "upstreams")

    raw = create_key(console, page)
    key_page = page.url

    # The quota bars before: the usage polls (every 5 s here) fill them in.
    before: dict[str, list[float]] = {}
    for label, address in accounts.items():
        page.goto(address)
        reload_until(page, lambda: page.locator("meter").count() > 0)
        before[label] = meter_values(page)

    answer = codex_exec(codex, stack, raw, files / "codex", PROMPT)
    assert answer.strip(), "the Codex CLI printed no answer"
    served = last_upstream_account(stack)
    assert served in accounts, served  # the Pool's own accounts serve its key

    page.goto(accounts[served])
    reload_until(page, lambda: meter_values(page) != before[served])
    after = meter_values(page)
    assert max(a - b for a, b in zip(after, before[served], strict=True)) > 0, (before, after)
    expect(page.locator(".quota")).to_contain_text("% used")
    console.look(page, "account-quota")

    page.goto(key_page)
    console.look(page, "key")
    page.get_by_role("link", name="Rotate…").click()
    console.look(page, "key-rotate-confirm")
    page.get_by_role("button", name="Rotate key").click()
    expect(heading(page)).to_have_text("Key rotated")
    rotated = page.get_by_label(re.compile(r"^Pool API key")).input_value()
    assert rotated != raw
    console.look(page, "key-rotated")
    assert gateway_status(stack, raw) == 401  # the old secret, refused at once
    assert gateway_status(stack, rotated) == 200

    nav(page, "Pools")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=POOL, exact=True))
    expect(row).to_contain_text("3 / 3")
    console.look(page, "pools")


async def test_owner_pool_three_ways_key_codex_quota_rotate(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    async with open_stack(
        db_url,
        tmp_path / "gw",
        accounts=6,
        instance_settings={"usage_poll_interval_seconds": 5},
    ) as stack:
        ids = await stack.account_ids()
        for label in (UPLOADED, BROWSER, DEVICE):
            await stack.database.run(
                lambda conn, label=label: store.delete_account(conn, UUID(ids[label]))
            )
        await stack.gateway.reload()
        await stack.control("POST", "signin", {"device_interval_seconds": DEVICE_INTERVAL_S})
        files = tmp_path / "files"
        files.mkdir()
        uploaded = next(a for a in stack.emulator.accounts if a.label == UPLOADED)
        (files / "auth.json").write_text(json.dumps(auth_json_for(uploaded)))

        flow = partial(main_path, stack=stack, files=files, codex=codex)
        console = await run_scenario(flow, stack.url, tmp_path, chromium)

        events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
        methods = sorted(
            e.details["method"] for e in events if e.action == "upstream_account.sign_in"
        )
        actions = [e.action for e in events]
    assert methods == ["browser", "device_code"]
    assert "upstream_account.import" in actions
    assert len(console.taken) >= 2 * 14
