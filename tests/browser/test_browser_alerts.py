"""The alerts page in a real browser: an incident opened by the leader's pass (an account
needing a new login, its label holding markup), a rule added from the page, every view
passing `look` at 1280 and 390 px."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from alert_support import QUIET, job, keyring, leading
from browser_steps import OWNER_EMAIL, OWNER_PASSWORD, heading, nav
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import POOL, open_stack

from pooler.store import alerts as alert_store
from pooler.store import operators
from pooler.store.accounts import set_lifecycle
from pooler.store.pools import get_pool

require_playwright()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e
MARKUP = "<i>acct</i>"


def alerts_flow(console: Console) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin$"))
    nav(page, "Alerts")
    expect(heading(page)).to_have_text("Alerts")
    expect(page.locator("table.alerts-incidents")).to_contain_text(f"account {MARKUP} needs")
    console.look(page, "alerts")

    page.get_by_label("Condition", exact=True).select_option(value="error_rate_above")
    page.get_by_label("Threshold (N or %)", exact=True).fill("20")
    page.get_by_role("button", name="Add rule").click()
    expect(page).to_have_url(re.compile(r"/admin/alerts$"))
    expect(page.get_by_text("error rate at or above 20 % over 5 minutes")).to_be_visible()
    page.get_by_label("Threshold (N or %)", exact=True).fill("many")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_role("alert")).to_contain_text("must be a number")
    console.look(page, "alerts-refused")


async def test_the_alerts_page_in_a_browser(db_url: str, tmp_path: Path, chromium: str) -> None:
    with leading(db_url):
        async with open_stack(db_url, tmp_path, accounts=2, instance_settings=QUIET) as stack:
            ring = keyring(stack)

            def setup(conn: Any) -> None:
                operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
                pool = get_pool(conn, POOL)
                account_id = conn.execute("SELECT id FROM upstream_accounts LIMIT 1").fetchone()[0]
                conn.execute(
                    "UPDATE upstream_accounts SET label = %s WHERE id = %s", (MARKUP, account_id)
                )
                set_lifecycle(conn, account_id, "reauth_required", "test", actor="test")
                alert_store.add_rule(conn, pool.id, "reauth_required", None, actor="test")
                alert_store.add_rule(conn, pool.id, "usable_below", 2, actor="test")
                alert_store.add_webhook(
                    conn, ring, pool.id, "ops hook", "http://127.0.0.1:9/hook", actor="test"
                )
                alert_store.add_email(conn, pool.id, "on call", "oncall@example.com", actor="t")

            await stack.database.run(setup)
            await job(stack, attempt_timeout_s=1.0).run_pass()
            console = await run_scenario(alerts_flow, stack.url, tmp_path, chromium)
    assert len(console.taken) == 2 * 2
