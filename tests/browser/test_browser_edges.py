"""The console's edges in a real browser, on one stack and one Chromium (the parts run in
order, the database checked after each): Settings → System refusing a value beside its
field then storing a valid change; a Pool's routing policy saved and shown after a reload,
a refused value beside its field; a Pool's delete refused while a key and an account depend
on it; a key paused (refused by the gateway), resumed (served), revoked (refused) from its
page; the Pool emptied and deleted; adding an account: a pasted callback URL with a wrong
`state` refused and the same sign-in completed with the right one, a device code denied and
one expired; an account re-linked from its page (the same account, new tokens)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import POOL, QUIET_POLLS, Stack, open_stack

from pooler import store
from pooler.crypto import Keyring
from pooler.store.credentials import load_account_credentials
from pooler.store.instance_settings import get_instance_settings
from pooler.store.keys import create_key

require_playwright()
from browser_steps import (  # noqa: E402
    HOME,
    OWNER_EMAIL,
    OWNER_PASSWORD,
    WAIT_MS,
    AuditTrail,
    create_owner,
    emulator,
    gateway_answers,
    gateway_status,
    heading,
    in_database,
    land_on_callback,
    nav,
    open_add_account,
    open_key,
    rows,
)
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.e2e

TEAM, TEAM_KEY = "team", "team key"
SHARED = "account-3"  # in demo and in team
ADDED = "account-4"  # in the emulator, not in the gateway until signed in
RELINKED = "account-1"
# The device sign-in pages reload every second: the flows that end by themselves end fast
# (no `look` is taken on a page still waiting).
DEVICE_INTERVAL_S = 1


@dataclass
class Edges:
    console: Console
    page: Page
    stack: Stack
    audit: AuditTrail
    team_key: str
    ids: dict[str, str]


def stored_settings(stack: Stack) -> dict[str, Any]:
    raw, _ = in_database(stack, get_instance_settings)
    return dict(raw)


def team_policy(stack: Stack) -> list[tuple[Any, ...]]:
    return rows(
        stack,
        "SELECT strategy, quota_threshold_percent, retry_budget, max_in_flight_per_account,"
        " continuity_enabled, v1_enabled, status FROM pools WHERE name = %s",
        TEAM,
    )


def account_labels(stack: Stack) -> list[str]:
    return [label for (label,) in rows(stack, "SELECT label FROM upstream_accounts ORDER BY 1")]


def system_settings(edges: Edges) -> None:
    """A refused value is shown beside its field and nothing is stored (not even the valid
    value sent with it); corrected, both are stored and audited."""
    page, stack = edges.page, edges.stack
    nav(page, "System")
    expect(heading(page)).to_have_text("System")
    edges.console.look(page, "system")
    opened = page.get_by_label("Open for (seconds)", exact=True)
    opened.fill("0")
    page.get_by_label("Quota freshness (seconds)", exact=True).fill("120")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Nothing was saved: correct the fields marked below."
    )
    expect(page.locator("#f-circuit_open_seconds-error")).to_have_text(
        "Open for (seconds) must be between 1 and 86400"
    )
    expect(opened).to_have_attribute("aria-invalid", "true")
    expect(opened).to_have_attribute(
        "aria-describedby", re.compile(r"f-circuit_open_seconds-error")
    )
    expect(opened).to_have_value("0")  # what was typed stays
    edges.console.look(page, "system-refused")
    assert stored_settings(stack) == QUIET_POLLS
    assert edges.audit.new() == []

    opened.fill("30")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("Saved: ")
    nav(page, "System")  # not a reload: that page answered the form's POST
    expect(opened).to_have_value("30")
    expect(
        page.get_by_role("button", name="Reset Open for (seconds) to its default")
    ).to_be_visible()
    edges.console.look(page, "system-saved")
    assert stored_settings(stack) == {
        **QUIET_POLLS,
        "circuit_open_seconds": 30,
        "quota_freshness_seconds": 120,
    }
    [(action, actor, details)] = edges.audit.new()
    assert (action, actor) == ("settings.update", OWNER_EMAIL)
    assert set(details["after"]) == {"circuit_open_seconds", "quota_freshness_seconds"}


def pool_policy(edges: Edges) -> str:
    """Every field of the routing policy saved and shown after a reload; a refused value
    beside its field, nothing changed. The Pool's page address."""
    page, stack = edges.page, edges.stack
    nav(page, "Pools")
    page.get_by_role("link", name=TEAM, exact=True).click()
    expect(heading(page)).to_have_text(TEAM)
    address = page.url
    edges.console.look(page, "pool")
    assert gateway_status(stack, edges.team_key, "/v1/models") == 200
    page.get_by_label("Routing strategy", exact=True).select_option(label="Fill first")
    page.get_by_label("Quota threshold (%)", exact=True).fill("90.5")
    page.get_by_label("Retry budget", exact=True).fill("2")
    page.get_by_label("In-flight cap per account", exact=True).fill("4")
    page.get_by_label("Conversation continuity", exact=True).uncheck()
    page.get_by_label("OpenAI-compatible /v1 API", exact=True).uncheck()
    page.get_by_role("button", name="Save routing policy").click()
    expect(page.locator(".figures")).to_contain_text("Fill first")
    page.reload()
    expect(page.get_by_label("Routing strategy", exact=True)).to_have_value("fill_first")
    expect(page.get_by_label("Quota threshold (%)", exact=True)).to_have_value("90.5")
    expect(page.get_by_label("Retry budget", exact=True)).to_have_value("2")
    expect(page.get_by_label("In-flight cap per account", exact=True)).to_have_value("4")
    expect(page.get_by_label("Conversation continuity", exact=True)).not_to_be_checked()
    expect(page.get_by_label("OpenAI-compatible /v1 API", exact=True)).not_to_be_checked()
    saved = [("fill_first", 90.5, 2, 4, False, False, "active")]
    assert team_policy(stack) == saved
    assert [(a, actor) for a, actor, _ in edges.audit.new()] == [("pool.update", OWNER_EMAIL)]
    gateway_answers(stack, edges.team_key, 403, "/v1/models")  # the switch, applied

    budget = page.get_by_label("Retry budget", exact=True)
    budget.fill("99")
    page.get_by_role("button", name="Save routing policy").click()
    expect(page.locator("#f-retry_budget-error")).to_have_text(
        "Retry budget must be between 0 and 20"
    )
    expect(budget).to_have_attribute("aria-invalid", "true")
    expect(budget).to_have_attribute("aria-describedby", re.compile(r"f-retry_budget-error"))
    expect(budget).to_have_value("99")
    edges.console.look(page, "pool-policy-refused")
    assert team_policy(stack) == saved
    assert edges.audit.new() == []
    return address


def delete_refused(edges: Edges, pool_page: str) -> None:
    """The Pool's key and account depend on it: the delete is refused, saying so."""
    page = edges.page
    page.goto(pool_page)
    confirm = page.get_by_label("Type the Pool's name to confirm")
    confirm.fill(TEAM[:-1])
    page.get_by_role("button", name="Delete Pool").click()
    expect(page.locator("#f-confirm_name-error")).to_contain_text("exactly as shown")
    expect(confirm).to_have_attribute("aria-invalid", "true")
    assert rows(edges.stack, "SELECT count(*) FROM pools WHERE name = %s", TEAM) == [(1,)]
    page.get_by_label("Type the Pool's name to confirm").fill(TEAM)
    page.get_by_role("button", name="Delete Pool").click()
    expect(page.get_by_role("alert")).to_have_text(
        f"pool '{TEAM}' still has 1 active API key and 1 assigned account: revoke its keys"
        " and unassign its accounts first"
    )
    expect(heading(page)).to_have_text(TEAM)
    edges.console.look(page, "pool-delete-refused")
    assert rows(edges.stack, "SELECT count(*) FROM pools WHERE name = %s", TEAM) == [(1,)]
    assert edges.audit.new() == []


def key_status(stack: Stack) -> str:
    [(status,)] = rows(stack, "SELECT status FROM pool_api_keys WHERE name = %s", TEAM_KEY)
    return str(status)


def pause_resume_revoke(edges: Edges) -> None:
    """From the key's page: pause (the gateway refuses the key), resume (served again),
    revoke after its confirmation (refused for good)."""
    page, stack, key = edges.page, edges.stack, edges.team_key
    assert gateway_status(stack, key) == 200
    open_key(page, TEAM_KEY)
    facts = page.locator(".facts")
    expect(facts).to_contain_text("active")
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(facts).to_contain_text("paused")
    edges.console.look(page, "key-paused")
    gateway_answers(stack, key, 401)
    assert key_status(stack) == "paused"
    assert edges.audit.actions() == ["api_key.pause"]

    page.get_by_role("button", name="Resume", exact=True).click()
    expect(facts).to_contain_text("active")
    gateway_answers(stack, key, 200)
    assert key_status(stack) == "active"
    assert edges.audit.actions() == ["api_key.resume"]

    page.get_by_role("link", name="Revoke…").click()
    expect(heading(page)).to_contain_text("Revoke key")
    expect(page.get_by_text("This cannot be undone")).to_be_visible()
    edges.console.look(page, "key-revoke-confirm")
    page.get_by_role("button", name="Revoke key").click()
    expect(facts).to_contain_text("revoked")
    expect(page.get_by_text("This key is revoked")).to_be_visible()
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    edges.console.look(page, "key-revoked")
    gateway_answers(stack, key, 401)
    assert key_status(stack) == "revoked"
    assert edges.audit.actions() == ["api_key.revoke"]


def delete_once_empty(edges: Edges, pool_page: str) -> None:
    """Its key revoked, its account unassigned on the account's page: the Pool is deleted."""
    page, stack = edges.page, edges.stack
    nav(page, "Upstreams")
    page.get_by_role("link", name=SHARED, exact=True).click()
    expect(heading(page)).to_have_text(SHARED)
    page.get_by_role("button", name=f"Unassign from {TEAM}").click()
    assignments = page.locator("#h-pools + .scroll")
    expect(assignments.get_by_role("row").filter(has_text=TEAM)).to_contain_text("disabled")
    edges.console.look(page, "account-unassigned")
    assert edges.audit.actions() == ["pool.assignment_update"]

    page.goto(pool_page)
    expect(page.locator(".figures")).to_contain_text("/ 0")
    page.get_by_label("Type the Pool's name to confirm").fill(TEAM)
    page.get_by_role("button", name="Delete Pool").click()
    expect(heading(page)).to_have_text("Pools")
    expect(page.get_by_role("status")).to_have_text("The Pool was deleted.")
    assert page.url.endswith("/admin/pools?deleted=1#main")
    expect(page.get_by_role("link", name=TEAM, exact=True)).to_have_count(0)
    edges.console.look(page, "pool-deleted")
    assert rows(stack, "SELECT count(*) FROM pools WHERE name = %s", TEAM) == [(0,)]
    assert [(a, actor) for a, actor, _ in edges.audit.new()] == [("pool.delete", OWNER_EMAIL)]
    answer = page.goto(pool_page)
    assert answer is not None and answer.status == 404
    expect(heading(page)).to_have_text("Not found")


def wrong_state_then_right(edges: Edges) -> None:
    """A browser sign-in: the callback URL with another `state` is refused on the same
    page; the right URL then completes the same sign-in."""
    page, stack = edges.page, edges.stack
    before = account_labels(stack)
    open_add_account(page, POOL)
    page.get_by_role("button", name="Start a browser sign-in").click()
    expect(heading(page)).to_have_text(f"Sign-in for {POOL}")
    flow = page.url
    href = page.get_by_role("link", name="Open ChatGPT's sign-in page").get_attribute("href")
    assert href
    landed = land_on_callback(page, href, emulator_account=ADDED)
    forged = re.sub(r"state=[^&]+", "state=forged", landed)
    assert forged != landed

    callback = page.get_by_label("Callback URL", exact=True)
    callback.fill(forged)
    page.get_by_role("button", name="Finish the sign-in").click()
    expect(page.locator("#f-callback-error")).to_contain_text(
        "belongs to another sign-in (its state does not match)"
    )
    expect(callback).to_have_attribute("aria-invalid", "true")
    expect(callback).to_have_attribute("aria-describedby", "f-callback-error")
    assert page.url == flow  # the same sign-in, still open
    edges.console.look(page, "sign-in-wrong-state")
    assert account_labels(stack) == before
    assert edges.audit.new() == []

    callback.fill(landed)
    page.get_by_role("button", name="Finish the sign-in").click()
    expect(page.get_by_role("status")).to_have_text(f"Done: the account was added to {POOL}.")
    added = next(a for a in stack.emulator.accounts if a.label == ADDED)
    assert account_labels(stack) == sorted([*before, added.email])  # labelled with its email
    [(action, actor, details)] = edges.audit.new()
    assert (action, actor) == ("upstream_account.sign_in", OWNER_EMAIL)
    assert (details["method"], details["created"]) == ("browser", True)


def device_refused(edges: Edges, control: str, words: str, shot: str) -> None:
    """A device code that the person denies, or that expires: the page says so, stops
    checking, and offers to start again; nothing is added."""
    page, stack = edges.page, edges.stack
    before = account_labels(stack)
    open_add_account(page, POOL)
    page.get_by_role("button", name="Sign in with a device code").click()
    code = page.locator(".user-code").inner_text()
    expect(page.get_by_role("status")).to_contain_text("Waiting for the sign-in")
    emulator(stack, "POST", f"device/{control}", {"user_code": code})
    expect(page.get_by_role("alert")).to_have_text(words, timeout=WAIT_MS)
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)  # it stopped checking
    edges.console.look(page, shot)
    page.get_by_role("link", name="Start again").click()
    expect(heading(page)).to_have_text(f"Add an account to {POOL}")
    assert account_labels(stack) == before
    assert edges.audit.new() == []


def credentials_of(stack: Stack, account_id: str) -> tuple[str, str]:
    keyring = Keyring(stack.config.upstream_secret_key, stack.config.upstream_secret_keys_old)
    found = in_database(
        stack, lambda conn: load_account_credentials(conn, keyring, UUID(account_id))
    )
    return found.access_token, found.refresh_token


def relink(edges: Edges) -> None:
    """Re-link from the account's page (a device code approved as the same account): still
    one account of that identity, its tokens replaced."""
    page, stack = edges.page, edges.stack
    account_id = edges.ids[RELINKED]
    before, tokens = account_labels(stack), credentials_of(stack, account_id)
    nav(page, "Upstreams")
    page.get_by_role("link", name=RELINKED, exact=True).click()
    page.get_by_role("link", name="Re-link (sign in again)").click()
    expect(heading(page)).to_have_text(f"Re-link {RELINKED}")
    edges.console.look(page, "relink")
    page.get_by_role("button", name="Sign in with a device code").click()
    expect(heading(page)).to_have_text(f"Re-link for {POOL}")
    code = page.locator(".user-code").inner_text()
    emulator(stack, "POST", "device/approve", {"user_code": code, "account_id": RELINKED})
    expect(page.get_by_role("status")).to_have_text(
        f"Done: the account was re-linked in {POOL}.", timeout=WAIT_MS
    )
    edges.console.look(page, "relink-done")
    page.get_by_role("link", name="See the account").click()
    expect(page).to_have_url(re.compile(f"/admin/upstreams/{account_id}$"))
    expect(page.locator(".facts")).to_contain_text("active")

    assert account_labels(stack) == before  # not a second account
    new_access, new_refresh = credentials_of(stack, account_id)
    assert new_access != tokens[0] and new_refresh != tokens[1]
    [(action, actor, details)] = edges.audit.new()
    assert (action, actor) == ("upstream_account.sign_in", OWNER_EMAIL)
    assert (details["method"], details["created"]) == ("device_code", False)


def edges_flow(console: Console, stack: Stack, team_key: str, ids: dict[str, str]) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(HOME)
    edges = Edges(console, page, stack, AuditTrail(stack), team_key, ids)
    system_settings(edges)
    pool_page = pool_policy(edges)
    delete_refused(edges, pool_page)
    pause_resume_revoke(edges)
    delete_once_empty(edges, pool_page)
    wrong_state_then_right(edges)
    device_refused(edges, "deny", "The sign-in was denied.", "device-denied")
    device_refused(
        edges,
        "expire",
        "The device code expired before the sign-in was done; start again.",
        "device-expired",
    )
    relink(edges)


async def test_console_edges_policy_delete_key_lifecycle_system_and_sign_ins(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path / "gw", accounts=4) as stack:
        await create_owner(stack)
        ids = await stack.account_ids()

        def setup(conn: Any) -> str:
            store.delete_account(conn, UUID(ids[ADDED]))
            store.create_pool(conn, TEAM)
            store.set_assignment(conn, TEAM, UUID(ids[SHARED]), actor="test")
            raw, _ = create_key(conn, stack.config.secret_key, TEAM, TEAM_KEY, actor="test")
            return raw

        team_key = await stack.database.run(setup)
        await stack.gateway.reload()
        await stack.control("POST", "signin", {"device_interval_seconds": DEVICE_INTERVAL_S})
        flow = partial(edges_flow, stack=stack, team_key=team_key, ids=ids)
        console = await run_scenario(flow, stack.url, tmp_path, chromium)
    assert len(console.taken) == 2 * 16
