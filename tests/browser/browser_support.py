"""Driving the console in a real browser: Debian's Chromium under Playwright's sync API.

The stack (`harness.open_stack`) runs in the test's trio loop; Playwright's sync API blocks,
so a scenario is a plain function run in a worker thread (`run_scenario`), which starts its
own Chromium, gives the scenario fresh browser contexts (`Console.page()`: a new profile, so
no cookie is shared), and closes everything afterwards. Every wait is bounded (Playwright's
timeouts inside, `trio.fail_after` around the thread).

`Console.look(page)` is called on every page a scenario reaches: it checks what every page
must have (one `<h1>`, no horizontal scrolling at phone width, no error in the browser's
console such as a CSP violation) and saves a full-page screenshot at laptop and at phone
width under the test's tmp dir, named after the page.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from harness import missing_client

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = "/usr/bin/chromium"
# From ../shared/reference/clients.md §6: Debian's Chromium, no first-run or network chatter.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
STEP_TIMEOUT_MS = 15_000  # one click, fill or navigation
SCENARIO_TIMEOUT_S = 180  # a whole scenario, browser start included

Scenario = Callable[["Console"], None]


def find_chromium(path: str = CHROMIUM) -> str:
    """The Chromium executable (POOLER_CHROMIUM overrides the Debian path); else a skip
    naming what installs it (a failure when POOLER_REQUIRE_E2E=1)."""
    wanted = os.environ.get("POOLER_CHROMIUM", path)
    found = shutil.which(wanted)
    if found is None:
        missing_client(f"Chromium is not at {wanted}: apt-get install chromium enables this test")
    return found


def require_playwright() -> None:
    """Called at the top of a browser test module, before it imports Playwright: without
    the package the module is skipped (failed when POOLER_REQUIRE_E2E=1) with the reason."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_client(
            "the playwright package is not installed: pip install -e '.[test]' enables this test"
            " (it uses Debian's chromium: no `playwright install`)"
        )


def slug(url: str) -> str:
    """A file name for a page: its path, `/admin/settings/totp` -> `admin-settings-totp`."""
    path = re.sub(r"^[a-z]+://[^/]+", "", url).split("?")[0].split("#")[0]
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


@dataclass
class Console:
    """What a scenario drives: one Chromium, its contexts, and the screenshots taken."""

    browser: Browser
    base_url: str
    shots: Path
    taken: list[Path] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def page(self) -> Page:
        """A page in a fresh context (a new browser profile: no cookies) at laptop size."""
        context = self.browser.new_context(base_url=self.base_url, viewport=LAPTOP)
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
        page = context.new_page()
        page.on("console", partial(self._console_message, page))
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        return page

    def _console_message(self, page: Page, message: Any) -> None:
        # A 4xx page (a refused sign-in, a 403) is logged as "Failed to load resource":
        # expected here; anything else (a CSP violation, a script error) is not.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.console_errors.append(f"{page.url}: {message.text}")

    def look(self, page: Page, label: str | None = None) -> None:
        """Check the page as every page must be, and screenshot it at both widths."""
        from playwright.sync_api import expect

        page.wait_for_load_state("load")
        expect(page.locator("h1")).to_have_count(1)
        name = f"{len(self.taken) // 2 + 1:02d}-{label or slug(page.url)}"
        try:
            for size in (LAPTOP, PHONE):
                page.set_viewport_size(size)
                shot = self.shots / f"{name}-{size['width']}.png"
                page.screenshot(path=str(shot), full_page=True)
                self.taken.append(shot)
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= size["width"], f"{name} scrolls sideways at {size['width']} px"
        finally:
            page.set_viewport_size(LAPTOP)


def wrapped(page: Page, selector: str, size: ViewportSize) -> list[str]:
    """The texts of the elements matching `selector` that break onto more than one line
    when the window is `size` (a code or a button label should not)."""
    page.set_viewport_size(size)
    try:
        found: list[str] = page.evaluate(
            """selector => [...document.querySelectorAll(selector)].filter(element => {
                const range = document.createRange();
                range.selectNodeContents(element);
                const tops = [...range.getClientRects()].map(rect => Math.round(rect.top));
                return new Set(tops).size > 1;
            }).map(element => element.textContent.trim())""",
            selector,
        )
        return found
    finally:
        page.set_viewport_size(LAPTOP)


def _run(scenario: Scenario, base_url: str, shots: Path, chromium: str) -> Console:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            console = Console(browser, base_url, shots)
            scenario(console)
            assert not console.console_errors, console.console_errors
            return console
        finally:
            browser.close()


async def run_scenario(scenario: Scenario, base_url: str, tmp_path: Path, chromium: str) -> Console:
    """Run `scenario` in a worker thread with its own Chromium; the trio loop (and the
    stack in it) keeps running meanwhile. Screenshots go to `tmp_path/screens`."""
    shots = tmp_path / "screens"
    shots.mkdir(exist_ok=True)
    with trio.fail_after(SCENARIO_TIMEOUT_S):
        return await trio.to_thread.run_sync(
            partial(_run, scenario, base_url, shots, chromium), abandon_on_cancel=True
        )


def sign_in(page: Page, email: str, password: str) -> None:
    """Submit the sign-in form (the caller checks where it leads)."""
    page.goto("/login")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def sign_out(page: Page) -> None:
    """The header's Sign out button; lands on the sign-in page."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login$"))
