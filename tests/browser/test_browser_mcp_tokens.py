"""The "MCP access" section of Settings in a real browser: turn the own switch on, create a
token (shown once, the copy buttons shown by the page's script, the Codex CLI snippet),
back to Settings (the token listed by prefix), delete it. Every page is looked at (one h1,
no sideways scroll at 390 px, no console error) and screenshotted at both widths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import Stack, open_stack
from mcp_support import enable_instance

from pooler.store import mcp_tokens, operators

require_playwright()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e

EMAIL = "owner@example.com"
PASSWORD = "owner password of the browser tests"
SETTINGS = re.compile(r"/admin/settings(#mcp)?$")


def flow(console: Console) -> None:
    page = console.page()
    sign_in(page, EMAIL, PASSWORD)
    page.goto("/admin/settings#mcp")
    console.look(page, "settings-mcp-off")
    page.get_by_role("button", name="Turn my MCP access on").click()
    expect(page).to_have_url(SETTINGS)
    expect(page.get_by_role("button", name="Turn my MCP access off")).to_be_visible()

    page.get_by_label("Token name", exact=True).fill("laptop <codex>")
    page.get_by_role("button", name="Create MCP token").click()
    expect(page.get_by_role("heading", name="MCP token created", level=1)).to_be_visible()
    token = page.get_by_label(re.compile("^MCP token")).input_value()
    assert token.startswith("cxp-mcp-")
    expect(page.locator("button[data-copy]").first).to_be_visible()  # copy.js ran
    expect(page.locator("pre").first).to_contain_text("[mcp_servers.codex_pooler]")
    console.look(page, "mcp-token-created")

    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(SETTINGS)
    row = page.locator("#mcp tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("laptop <codex>")
    assert token not in page.content()
    console.look(page, "settings-mcp-token")
    row.get_by_role("button", name=re.compile("^Delete MCP token")).click()
    expect(page).to_have_url(SETTINGS)
    expect(page.locator("#mcp tbody tr")).to_have_count(0)


async def count_tokens(stack: Stack) -> int:
    return len(await stack.database.run(mcp_tokens.list_mcp_tokens))


async def test_mcp_access_on_the_settings_page(db_url: str, tmp_path: Path, chromium: str) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.database.run(lambda conn: operators.create_owner(conn, EMAIL, PASSWORD))
        await enable_instance(stack)
        console = await run_scenario(flow, stack.url, tmp_path, chromium)
        assert await count_tokens(stack) == 0
        enabled = await stack.database.run(
            lambda conn: mcp_tokens.operator_mcp_enabled(
                conn, operators.find_operator(conn, EMAIL).id
            )
        )
    assert enabled
    assert len(console.taken) == 6
    print("screens:", tmp_path / "screens")
