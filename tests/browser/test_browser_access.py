"""Getting in and out of the console in a real browser: the first owner, sign-in with and
without a second factor, recovery codes, sessions, sign-out; the error paths (wrong
password, wrong code, a form without its CSRF token) and the keyboard."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyotp
import pytest
from browser_support import (
    LAPTOP,
    PHONE,
    Console,
    require_playwright,
    run_scenario,
    sign_in,
    sign_out,
    wrapped,
)
from harness import Stack, open_stack

from pooler import store
from pooler.store import operators

require_playwright()
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.e2e

EMAIL = "owner@example.com"
PASSWORD = "owner password of the browser tests"
NAME = "The Owner"
POOLS = re.compile(r"/admin/pools$")
HOME = re.compile(r"/admin$")  # the overview: where signing in lands


async def audit_actions(stack: Stack) -> list[str]:
    events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
    return [event.action for event in events]


async def create_owner(stack: Stack) -> None:
    await stack.database.run(
        lambda conn: operators.create_owner(conn, EMAIL, PASSWORD, display_name=NAME)
    )


def wrong_code(generator: pyotp.TOTP) -> str:
    """Six digits that no step near now has."""
    near = {generator.at(time.time() + seconds) for seconds in (-30, 0, 30, 60)}
    return next(code for code in ("123456", "654321", "111111") if code not in near)


def enrol_totp(console: Console, page: Page) -> tuple[pyotp.TOTP, list[str]]:
    """From the settings page: set up two-factor sign-in with a wrong code first, then the
    right one computed from the key shown on the page. The generator and recovery codes."""
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(page).to_have_url(re.compile(r"/admin/settings/totp$"))
    expect(page.locator(".qr svg")).to_be_visible()
    console.look(page, "totp-enrol")
    assert wrapped(page, "figcaption code", PHONE) == []  # the key on one line
    secret = page.locator("figcaption code").inner_text().replace(" ", "")
    generator = pyotp.TOTP(secret)

    page.get_by_label("Code", exact=True).fill("000000")
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    console.look(page, "totp-enrol-wrong-code")

    page.get_by_label("Code", exact=True).fill(generator.now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Recovery codes")
    codes = page.locator("ol.codes code").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    console.look(page, "recovery-codes")
    assert wrapped(page, "ol.codes code", PHONE) == []  # no code split across lines
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_text("Recovery codes left: 10")).to_be_visible()
    return generator, codes


def first_run(console: Console) -> None:
    """Bootstrap, sign out and in, enrol TOTP, sign in with a code and (second browser)
    a recovery code, revoke the other session, sign out."""
    page = console.page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/bootstrap$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Create the owner")
    console.look(page, "bootstrap")
    page.get_by_label("Email", exact=True).fill(EMAIL)
    page.get_by_label("Display name", exact=True).fill(NAME)
    page.get_by_label("Password", exact=True).fill("too short")
    page.get_by_role("button", name="Create owner").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 12 characters")
    expect(page.get_by_label("Email", exact=True)).to_have_value(EMAIL)  # kept
    console.look(page, "bootstrap-refused")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create owner").click()
    expect(page).to_have_url(HOME)  # signed in as the new owner
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Pools").click()
    expect(page).to_have_url(POOLS)
    expect(page.get_by_role("cell", name="demo", exact=True)).to_be_visible()
    console.look(page, "pools")
    page.goto("/bootstrap")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")  # gone for good
    console.look(page, "bootstrap-gone")

    page.goto("/admin/pools")
    sign_out(page)
    console.look(page, "login")
    sign_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(HOME)
    page.get_by_role("link", name="Settings", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/settings$"))
    expect(page.locator("nav [aria-current=page]")).to_have_text("Settings")
    console.look(page, "settings")
    generator, codes = enrol_totp(console, page)
    console.look(page, "settings-totp-on")
    # Each password field says what it is for.
    expect(page.get_by_label("Password (for new recovery codes)")).to_be_empty()
    expect(page.get_by_label("Password (to turn two-factor sign-in off)")).to_be_empty()
    assert wrapped(page, "table button.link", LAPTOP) == []
    sign_out(page)

    sign_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(re.compile(r"/login/code$"))
    expect(page.get_by_label("Code", exact=True)).to_be_focused()  # autofocus
    console.look(page, "login-code")
    page.get_by_label("Code", exact=True).fill(wrong_code(generator))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("That code is not valid.")
    console.look(page, "login-code-wrong")
    # The step after the enrolment's code: within the allowed drift, and not used yet.
    page.get_by_label("Code", exact=True).fill(generator.at(time.time() + 30))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(HOME)

    other = console.page()  # another browser: the second factor is a recovery code
    sign_in(other, EMAIL, PASSWORD)
    expect(other).to_have_url(re.compile(r"/login/code$"))
    other.get_by_label("Code", exact=True).fill(codes[0])
    other.get_by_role("button", name="Sign in", exact=True).click()
    expect(other).to_have_url(HOME)

    page.goto("/admin/settings")
    expect(page.get_by_text("Recovery codes left: 9")).to_be_visible()
    sessions = page.locator("table tbody tr")
    expect(sessions).to_have_count(2)
    expect(sessions.get_by_role("button", name="Sign out (this session)")).to_have_count(1)
    console.look(page, "settings-two-sessions")
    page.get_by_role("button", name="Sign out all other sessions").click()
    expect(page.get_by_role("status")).to_have_text("Signed out 1 other session(s).")
    expect(sessions).to_have_count(1)
    other.goto("/admin/pools")
    expect(other).to_have_url(re.compile(r"/login$"))  # its session is gone

    sign_out(page)
    page.goto("/admin/settings")
    expect(page).to_have_url(re.compile(r"/login$"))


async def test_first_run_totp_recovery_code_and_sessions(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        console = await run_scenario(first_run, stack.url, tmp_path, chromium)
        actions = await audit_actions(stack)
    assert len(console.taken) >= 2 * 12
    for action in (
        "operator.create",
        "operator.totp_enable",
        "operator.recovery_code_used",
        "console.session_revoke_others",
        "console.sign_out",
    ):
        assert action in actions, action
    assert actions.count("console.sign_in_failed") == 1  # the wrong code


def wrong_password(console: Console) -> None:
    page = console.page()
    sign_in(page, EMAIL, "not the password at all")
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    expect(page.get_by_label("Email", exact=True)).to_have_value(EMAIL)
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    console.look(page, "login-wrong-password")
    sign_in(page, "nobody@example.com", PASSWORD)  # the same words for an unknown email
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    page.goto("/admin/pools")
    expect(page).to_have_url(re.compile(r"/login$"))
    sign_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(HOME)


async def test_a_wrong_password_is_refused_with_the_same_words(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await create_owner(stack)
        await run_scenario(wrong_password, stack.url, tmp_path, chromium)
        actions = await audit_actions(stack)
    assert actions.count("console.sign_in_failed") == 2


def posts_without_csrf(console: Console) -> None:
    """Forms posted by the page's own request context (its cookies) without the token, or
    with a wrong one, and a form whose hidden token was removed: 403, nothing changes."""
    page = console.page()
    page.goto("/login")
    refused = page.request.post("/login", form={"email": EMAIL, "password": PASSWORD})
    assert refused.status == 403
    sign_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(HOME)
    page.goto("/admin/settings")
    for form in ({"display_name": "Mallory"}, {"display_name": "Mallory", "csrf_token": "x" * 43}):
        answer = page.request.post("/admin/settings/profile", form=form, max_redirects=0)
        assert answer.status == 403, answer.status
    answer = page.request.post("/logout", form={}, max_redirects=0)
    assert answer.status == 403
    answer = page.request.post("/admin/settings/sessions/revoke-others", form={})
    assert answer.status == 403

    # The browser itself submitting a form whose token was taken out.
    page.reload()
    profile = page.locator("form[action='/admin/settings/profile']")
    profile.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Display name", exact=True).fill("Mallory")
    page.get_by_role("button", name="Save profile").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")
    console.look(page, "profile-without-csrf")
    assert "Mallory" not in page.content()

    page.goto("/admin/settings")  # still signed in, nothing changed
    expect(page.get_by_label("Display name", exact=True)).to_have_value(NAME)


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await create_owner(stack)
        before = await audit_actions(stack)
        await run_scenario(posts_without_csrf, stack.url, tmp_path, chromium)
        after = await audit_actions(stack)
        owner = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT display_name, (SELECT count(*) FROM console_sessions) FROM operators"
            ).fetchone()
        )
    assert owner == (NAME, 1)
    assert [a for a in after if a not in ("console.sign_in",)] == before


def focused(page: Page) -> str:
    """The focused element: its id, else its text."""
    found: str = page.evaluate(
        "() => { const e = document.activeElement; return e.id || e.textContent.trim() }"
    )
    return found


def keyboard_only(console: Console) -> None:
    """Tab reaches the skip link, then the fields and the button in order; Enter submits."""
    page = console.page()
    page.goto("/login")
    page.keyboard.press("Tab")
    assert focused(page) == "Skip to content"
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    console.look(page, "login-skip-link")
    order = [focused(page)]
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(focused(page))
    assert order.index("f-email") < order.index("f-password") < order.index("Sign in"), order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "f-email"
    page.keyboard.type(EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(HOME)
    console.look(page, "home-by-keyboard")


async def test_sign_in_with_the_keyboard_only(db_url: str, tmp_path: Path, chromium: str) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await create_owner(stack)
        await run_scenario(keyboard_only, stack.url, tmp_path, chromium)
