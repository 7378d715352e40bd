"""The request logs in a real browser: after a real request through the gateway and a
stored failover, the operator opens Request logs from the nav, filters by status class,
and opens the failed-over request: its page shows both attempts in order and the routing
story. Screenshots of the list, the filtered list and the detail at 1280 and 390 px."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import POOL, Stack, open_stack, responses_body

from pooler import store
from pooler.store import operators
from pooler.store.logs import insert_attempts, insert_request_logs
from pooler.store.models import AttemptRow, RequestLogRow

require_playwright()
from browser_steps import HOME, OWNER_EMAIL, OWNER_NAME, OWNER_PASSWORD, heading, nav  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e


def find_and_open(console: Console) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(HOME)
    nav(page, "Request logs")
    expect(heading(page)).to_have_text("Request logs")
    rows = page.locator("table.logs tbody tr")
    expect(rows).to_have_count(2)  # the real request and the stored failover
    console.look(page, "request-logs")

    page.get_by_label("Status", exact=True).select_option("4xx")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=4xx"))  # the filter is in the URL
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("usage_limit_reached")
    console.look(page, "request-logs-4xx")

    rows.first.get_by_role("link").click()
    expect(heading(page)).to_contain_text("req_browser_failover")
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("account-1")
    expect(attempts.nth(0)).to_contain_text("429")
    expect(attempts.nth(1)).to_contain_text("account-2")
    expect(page.locator("table.candidates")).to_contain_text("excluded: usage_limit_reached")
    expect(page.locator('[data-field="client_ip"]')).to_have_text("198.51.100.7")
    console.look(page, "request-log-detail")


async def test_the_operator_finds_a_request_and_reads_its_story(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.database.run(
            lambda conn: operators.create_owner(
                conn, OWNER_EMAIL, OWNER_PASSWORD, display_name=OWNER_NAME
            )
        )
        headers = {"Authorization": f"Bearer {stack.key}"}
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
            response = await client.post("/backend-api/codex/responses", json=responses_body())
            assert response.status_code == 200
        await stack.wait_for_logs(1)
        await stack.database.run(partial(store_failover, stack=stack))
        await run_scenario(find_and_open, stack.url, tmp_path, chromium)


def store_failover(conn: Any, stack: Stack) -> None:
    pool = store.get_pool(conn, POOL)
    ids = dict(conn.execute("SELECT label, id FROM upstream_accounts").fetchall())
    at = datetime.now(UTC) - timedelta(minutes=1)
    insert_request_logs(
        conn,
        [
            RequestLogRow(
                request_id="req_browser_failover",
                created_at=at,
                route="responses",
                outcome="refused",
                pool_id=pool.id,
                key_prefix=stack.key[:12],
                transport="http",
                model="gpt-5.1-codex",
                status_code=429,
                error_code="usage_limit_reached",
                account_id=ids["account-2"],
                account_label="account-2",
                retries=1,
                duration_ms=512.0,
                client_ip="198.51.100.7",
                request_bytes=2048,
                response_bytes=310,
                continuity="moved",
                continuity_from=ids["account-1"],
                exclusions={"account-1": "usage_limit_reached"},
                routing={
                    "strategy": "least_used",
                    "candidates": [
                        {"label": "account-1", "verdict": "excluded: usage_limit_reached"},
                        {"label": "account-2", "verdict": "chosen"},
                    ],
                },
            )
        ],
    )
    insert_attempts(
        conn,
        [
            AttemptRow(
                "req_browser_failover",
                1,
                at,
                "failed",
                ids["account-1"],
                "account-1",
                80.0,
                429,
                "usage_limit_reached",
                60.0,
            ),
            AttemptRow(
                "req_browser_failover",
                2,
                at + timedelta(milliseconds=80),
                "refused",
                ids["account-2"],
                "account-2",
                420.0,
                429,
                "usage_limit_reached",
                50.0,
            ),
        ],
    )
