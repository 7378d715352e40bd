"""The overview in a real browser: signing in lands on it; while traffic runs through the
gateway its requests-per-minute number moves without a reload (the live stream); hiding the
tab closes the stream and showing it opens it again; an account paused meanwhile appears in
the attention list live. Screenshots at 1280 and 390 px (`console.look`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from uuid import UUID

import pytest
import trio
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import Stack, open_stack

from pooler import store
from pooler.admin_ui import overview_page
from pooler.store import operators
from pooler.store.accounts import pause_account

require_playwright()
from browser_steps import HOME, OWNER_EMAIL, OWNER_NAME, OWNER_PASSWORD, gateway_status  # noqa: E402
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.e2e


def set_hidden(page: Page, hidden: bool) -> None:
    """What the browser does when the tab goes to the background (or comes back)."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def streams() -> int:
    return overview_page.STREAMS.total


def watch(console: Console, stack: Stack, demo: UUID, paused: UUID) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(HOME)
    status = page.locator("#live-status")
    expect(status).to_contain_text("Live")
    rpm = page.locator(f'[data-live="{demo}:rpm"]')
    expect(rpm).to_have_text("0.0")
    expect(page.get_by_text("Nothing needs attention")).to_be_visible()
    console.look(page, "overview-quiet")

    for _ in range(4):  # traffic, while the page stays as it is (no reload)
        assert gateway_status(stack, stack.key) == 200
    expect(rpm).not_to_have_text("0.0", timeout=20_000)
    expect(page.locator(f'[data-live="{demo}:cached"]')).not_to_have_text("\u2013")
    # The stored quota windows name themselves by their length once reported.
    expect(page.locator(f'[data-live="{demo}:primary:name"]')).to_have_text("5h window")

    set_hidden(page, True)
    expect(status).to_have_text("Paused while this tab is hidden.")
    trio.from_thread.run(partial(until_streams, 0))
    set_hidden(page, False)
    expect(status).to_contain_text("Live")
    trio.from_thread.run(partial(until_streams, 1))

    trio.from_thread.run(
        partial(stack.database.run, lambda conn: pause_account(conn, paused, "disk swap"))
    )
    rows = page.locator("#attention-rows tr")
    expect(rows).to_have_count(1, timeout=20_000)
    expect(rows.first).to_contain_text("paused")
    expect(rows.first).to_contain_text("disk swap")
    expect(page.get_by_text("Nothing needs attention")).to_be_hidden()
    expect(page.locator(f'[data-live="{demo}:usable"]')).to_have_text("2 / 3")
    console.look(page, "overview-attention")


async def until_streams(count: int) -> None:
    with trio.fail_after(10):
        while streams() != count:
            await trio.sleep(0.05)


async def test_the_overview_moves_while_traffic_runs(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.database.run(
            lambda conn: operators.create_owner(
                conn, OWNER_EMAIL, OWNER_PASSWORD, display_name=OWNER_NAME
            )
        )
        demo = await stack.database.run(lambda conn: store.get_pool(conn, "demo").id)
        ids = await stack.account_ids()
        paused = UUID(ids[sorted(ids)[0]])
        console = await run_scenario(
            partial(watch, stack=stack, demo=demo, paused=paused), stack.url, tmp_path, chromium
        )
        assert len(console.taken) == 4
    assert streams() == 0
