"""The audit log in a real browser: the owner edits a Pool's policy, opens Audit log from
the header, filters by an action prefix and by the Pool, opens the edit and reads its
before/after; each page looked at (and screenshotted) at 1280 and 390 px."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_steps import heading, nav
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import POOL, open_stack

from pooler import store
from pooler.store import operators

require_playwright()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e

EMAIL = "owner@example.com"
PASSWORD = "owner password of the browser tests"


async def test_list_filter_and_detail(tmp_path: Path, db_url: str, chromium: str) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        demo = await stack.database.run(lambda conn: store.get_pool(conn, POOL))
        await stack.database.run(
            lambda conn: operators.create_owner(conn, EMAIL, PASSWORD, display_name="Owner")
        )

        def flow(console: Console) -> None:
            page = console.page()
            sign_in(page, EMAIL, PASSWORD)
            # A policy edit on the Pool's page: the retry budget.
            page.goto(f"/admin/pools/{demo.id}")
            page.get_by_label("Retry budget").fill(str(demo.retry_budget + 2))
            page.get_by_role("button", name="Save routing policy").click()
            expect(heading(page)).to_contain_text(POOL)

            nav(page, "Audit log")
            expect(heading(page)).to_have_text("Audit log")
            expect(page.locator("table.audit tbody tr").first).to_be_visible()
            console.look(page, "audit-log")

            page.get_by_label("Action", exact=True).fill("pool.")
            page.get_by_label("Pool", exact=True).select_option(label=POOL)
            page.get_by_role("button", name="Filter", exact=True).click()
            expect(page).to_have_url(re.compile(r"action=pool\.&"))
            rows = page.locator("table.audit tbody tr")
            expect(rows.first).to_contain_text("pool.update")
            for action in rows.locator("td[data-label=Action]").all_inner_texts():
                assert action.startswith("pool."), action
            console.look(page, "audit-log-filtered")

            rows.filter(has_text="pool.update").first.locator("td[data-label=When] a").click()
            expect(heading(page)).to_contain_text("pool.update")
            changed = page.locator("table.audit-diff tbody tr")
            expect(changed).to_have_count(1)
            expect(changed).to_contain_text("retry_budget")
            expect(changed.locator("td.before")).to_have_text(str(demo.retry_budget))
            expect(changed.locator("td.after")).to_have_text(str(demo.retry_budget + 2))
            expect(page.get_by_role("link", name=POOL).first).to_be_visible()
            console.look(page, "audit-event")

            # A bad value typed into the URL: refused beside the form.
            response = page.goto("/admin/audit-logs?since=yesterday")
            assert response is not None and response.status == 400
            expect(page.locator("#f-since-error")).to_be_visible()
            console.look(page, "audit-log-bad-filter")

        await run_scenario(flow, stack.url, tmp_path, chromium)
