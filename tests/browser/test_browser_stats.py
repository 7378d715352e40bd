"""The stats page in a real browser: traffic through the gateway plus a month of older
rows, rolled up by the Scheduler's functions; the operator opens Stats from the nav,
switches windows and Pools through the URL's selector, and every view passes `look` at
1280 and 390 px (charts scale with their viewBox; no CSP violation from the SVG)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from browser_steps import OWNER_EMAIL, OWNER_PASSWORD, heading, nav
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import Stack, open_stack, responses_body

from pooler import store
from pooler.pricing import bundled
from pooler.store import logs, operators
from pooler.store.models import RequestLogRow
from pooler.store.rollups import recompute_hours

require_playwright()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e

CODES = ["usage_limit_reached", "server_error", "no_eligible_backend", "<odd & code>"]


def history(
    pool_id: Any, key_prefix: str, accounts: list[Any], now: datetime
) -> list[RequestLogRow]:
    """A month of made-up traffic: a few requests an hour, some errors, varied latency."""
    rng = random.Random(14)
    rows = []
    for hours_ago in range(1, 30 * 24, 3):
        for n in range(rng.randint(1, 6)):
            failed = rng.random() < 0.15
            input_tokens, output_tokens = rng.randint(1_000, 40_000), rng.randint(50, 3_000)
            cached = rng.randint(0, min(20_000, input_tokens))
            rows.append(
                RequestLogRow(
                    request_id=f"req_hist_{hours_ago}_{n}",
                    created_at=now - timedelta(hours=hours_ago, minutes=rng.randint(0, 59)),
                    route="responses",
                    outcome="failed" if failed else "completed",
                    pool_id=pool_id,
                    key_prefix=key_prefix,
                    account_id=rng.choice(accounts),
                    status_code=rng.choice([429, 502]) if failed else 200,
                    error_code=rng.choice(CODES) if failed else None,
                    duration_ms=rng.lognormvariate(6.5, 0.8),
                    model="gpt-5.5",
                    input_tokens=input_tokens,
                    cached_input_tokens=cached,
                    output_tokens=output_tokens,
                    reasoning_tokens=rng.randint(0, min(500, output_tokens)),
                    cost_usd=bundled().cost("gpt-5.5", input_tokens, cached, output_tokens),
                )
            )
    return rows


async def traffic(stack: Stack) -> None:
    async with stack.client() as client:
        with trio.fail_after(30):
            for i in range(4):
                answer = await client.post(
                    "/backend-api/codex/responses", json=responses_body(prompt_cache_key=f"s{i}")
                )
                assert answer.status_code == 200
    await stack.wait_for_logs(4)


def stats_flow(console: Console) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin$"))
    nav(page, "Stats")
    expect(heading(page)).to_have_text("Stats")
    expect(page).to_have_url(re.compile(r"/admin/stats$"))
    expect(page.locator("svg.chart-svg")).to_have_count(3)
    expect(page.get_by_role("img", name="Requests and errors, last 24 h")).to_be_visible()
    expect(page.get_by_role("table", name="Figures per Pool")).to_contain_text("demo")
    expect(page.get_by_text("What your seats saved against API prices")).to_be_visible()
    console.look(page, "stats-24h")

    for label, key in (("1 h", "1h"), ("7 d", "7d"), ("30 d", "30d")):
        page.get_by_role("navigation", name="Window").get_by_role("link", name=label).click()
        expect(page).to_have_url(re.compile(rf"/admin/stats\?window={key}$"))
        expect(page.get_by_role("img", name=f"Requests and errors, last {label}")).to_be_visible()
        console.look(page, f"stats-{key}")
    expect(page.locator("#h-codes + div")).to_contain_text("<odd & code>")  # shown as text

    page.get_by_label("Pool", exact=True).select_option(label="quiet")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page).to_have_url(re.compile(r"window=30d&pool="))
    expect(page.get_by_text("No requests in the last 30 d for this Pool.")).to_be_visible()
    console.look(page, "stats-empty")

    page.goto("/admin/stats?window=forever")
    expect(page.get_by_role("alert")).to_contain_text("Choose a window")
    console.look(page, "stats-bad-window")


async def test_the_stats_page_in_a_browser(db_url: str, tmp_path: Path, chromium: str) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await traffic(stack)
        now = datetime.now(UTC)

        def setup(conn: Any) -> None:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            store.create_pool(conn, "quiet")
            pool_id, prefix = conn.execute(
                "SELECT pool_id, key_prefix FROM pool_api_keys LIMIT 1"
            ).fetchone()
            accounts = [row[0] for row in conn.execute("SELECT id FROM upstream_accounts")]
            logs.insert_request_logs(conn, history(pool_id, prefix, accounts, now))

        await stack.database.run(setup)
        await stack.database.run(lambda conn: recompute_hours(conn, now - timedelta(days=31), now))
        await stack.gateway.stats_rollups.recent()
        console = await run_scenario(stats_flow, stack.url, tmp_path, chromium)
    assert len(console.taken) == 2 * 6
