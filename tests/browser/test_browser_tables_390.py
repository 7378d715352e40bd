"""Every table of the console shows all its columns at phone width (390 px) and at 1280 px.

One stack with real traffic, a month of older rows rolled up for Stats, an incident and
rules on Alerts, an invite, a second operator and audit events; one signed-in owner visits
each page that has a table (the overview, Pools and a Pool, Upstreams and an account, API
keys and a key, Request logs and a request, Alerts, Audit log and an event, Settings,
System, Operators, Invites, Stats over 24 h and 30 d), passes `look` there, and no table may
be wider than the box it is drawn in (`table_fit.cut_tables`): a scroll box counts as cut,
since a phone gives no cue that it scrolls. The stats page's per-hour tables (the cost
column of "Requests and errors", the reasoning column of "Tokens by kind") were cut so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alert_support import QUIET, job, leading
from browser_steps import OWNER_EMAIL, OWNER_PASSWORD
from browser_support import LAPTOP, PHONE, Console, require_playwright, run_scenario, sign_in
from harness import POOL, open_stack
from table_fit import cut_tables
from test_browser_stats import history, traffic

from pooler import store
from pooler.store import alerts as alert_store
from pooler.store import invites, operators
from pooler.store import logs as log_store
from pooler.store.accounts import set_lifecycle
from pooler.store.pools import get_pool
from pooler.store.rollups import recompute_hours

require_playwright()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e


def pages(ids: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, path) of each console page with a table, in the order a user might go."""
    return [
        ("overview", "/admin"),
        ("pools", "/admin/pools"),
        ("pool", f"/admin/pools/{ids['pool']}"),
        ("upstreams", "/admin/upstreams"),
        ("account", f"/admin/upstreams/{ids['account']}"),
        ("api-keys", "/admin/api-keys"),
        ("api-key", f"/admin/api-keys/{ids['key']}"),
        ("request-logs", "/admin/request-logs"),
        ("request-log", f"/admin/request-logs/{ids['log']}"),
        ("alerts", "/admin/alerts"),
        ("audit-logs", "/admin/audit-logs"),
        ("audit-log", f"/admin/audit-logs/{ids['event']}"),
        ("settings", "/admin/settings"),
        ("system", "/admin/system"),
        ("operators", "/admin/operators"),
        ("invites", "/admin/invites"),
        ("stats-24h", "/admin/stats"),
        ("stats-30d", "/admin/stats?window=30d"),
    ]


def tables_flow(ids: dict[str, Any], console: Console) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin$"))
    cut: list[str] = []
    tables = 0
    for name, path in pages(ids):
        page.goto(path)
        expect(page.locator("h1")).to_have_count(1)
        tables += page.locator("table").count()
        console.look(page, name)
        for size in (PHONE, LAPTOP):
            cut += [f"{name} at {size['width']} px: {t}" for t in cut_tables(page, size)]
        page.set_viewport_size(LAPTOP)
    assert tables >= 30, tables  # the pages had their tables (not empty states)
    assert not cut, "\n".join(cut)


async def test_no_table_is_cut_at_phone_width(db_url: str, tmp_path: Path, chromium: str) -> None:
    with leading(db_url):
        async with open_stack(db_url, tmp_path, accounts=2, instance_settings=QUIET) as stack:
            await traffic(stack)
            now = datetime.now(UTC)
            ids: dict[str, Any] = {}

            def setup(conn: Any) -> None:
                operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
                operators.create_operator_with_temporary_password(
                    conn, "admin@example.com", "admin", actor=OWNER_EMAIL
                )
                pool = get_pool(conn, POOL)
                store.create_pool(conn, "quiet")
                ids["pool"] = pool.id
                ids["key"], prefix = conn.execute(
                    "SELECT id, key_prefix FROM pool_api_keys LIMIT 1"
                ).fetchone()
                accounts = [row[0] for row in conn.execute("SELECT id FROM upstream_accounts")]
                ids["account"] = accounts[0]
                ids["log"] = conn.execute("SELECT id FROM request_logs LIMIT 1").fetchone()[0]
                log_store.insert_request_logs(conn, history(pool.id, prefix, accounts, now))
                set_lifecycle(conn, accounts[1], "reauth_required", "test", actor="test")
                alert_store.add_rule(conn, pool.id, "reauth_required", None, actor=OWNER_EMAIL)
                alert_store.add_email(
                    conn, pool.id, "on call", "oncall@example.com", actor=OWNER_EMAIL
                )
                invites.create_invite(conn, stack.config.secret_key, pool.id, actor=OWNER_EMAIL)
                ids["event"] = conn.execute(
                    "SELECT id FROM audit_events WHERE action = 'alert_rule.create'"
                ).fetchone()[0]

            await stack.database.run(setup)
            await stack.database.run(
                lambda conn: recompute_hours(conn, now - timedelta(days=31), now)
            )
            await stack.gateway.stats_rollups.recent()
            await job(stack, attempt_timeout_s=1.0).run_pass()
            console = await run_scenario(
                lambda c: tables_flow(ids, c), stack.url, tmp_path, chromium
            )
    assert len(console.taken) == 2 * len(pages(ids))
