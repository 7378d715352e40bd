"""Steps the console scenarios share, written as a user takes them (labels, buttons, links),
and the few things a scenario asks of the stack from its worker thread: the emulator's
control API (approving a device sign-in), the gateway over plain HTTP, the Codex CLI.

A scenario runs in a thread started by `trio.to_thread.run_sync`, so it calls the stack's
async helpers with `trio.from_thread.run` (the database too: `rows`, `AuditTrail`); every
wait is bounded."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio
from harness import Stack, responses_body, run_client
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from pooler.store import operators

T = TypeVar("T")

OWNER_EMAIL = "owner@example.com"
OWNER_PASSWORD = "owner password of the browser tests"
OWNER_NAME = "The Owner"
RESPONSES = "/backend-api/codex/responses"
POOLS = re.compile(r"/admin/pools$")
HOME = re.compile(r"/admin$")  # the overview: where signing in lands
WAIT_MS = 20_000  # what a page that completes by itself (meta refresh) may take
# The emulator's device-code poll interval, so the sign-in pages reload themselves every
# 3 s: long enough for `Console.look` to take its screenshots between two reloads.
DEVICE_INTERVAL_S = 3
# Where ChatGPT's sign-in sends the browser back (nothing listens there in a test).
CALLBACK = re.compile(r"^http://localhost:1455/auth/callback\?")


async def create_owner(stack: Stack) -> None:
    """The instance owner, straight in the database (the flow signs in as it)."""
    await stack.database.run(
        lambda conn: operators.create_owner(
            conn, OWNER_EMAIL, OWNER_PASSWORD, display_name=OWNER_NAME
        )
    )


def nav(page: Page, name: str) -> None:
    """Follow a link of the console's header."""
    page.get_by_role("navigation", name="Console").get_by_role(
        "link", name=name, exact=True
    ).click()


def heading(page: Page) -> Any:
    return page.get_by_role("heading", level=1)


def open_add_account(page: Page, pool: str) -> None:
    """Upstreams → Add an account → the Pool → Continue (asked only when there are several
    Pools): the page of the three ways."""
    nav(page, "Upstreams")
    page.get_by_role("link", name="Add an account", exact=True).click()
    expect(heading(page)).to_contain_text("Add an account")
    if heading(page).inner_text() == "Add an account":
        page.get_by_label("Pool", exact=True).select_option(label=pool)
        page.get_by_role("button", name="Continue", exact=True).click()
    expect(heading(page)).to_have_text(f"Add an account to {pool}")


def land_on_callback(page: Page, authorize_url: str, **choices: str) -> str:
    """Open the authorize URL a browser sign-in page shows in a second tab (`choices`: the
    emulator's `emulator_account=...`, `emulator_deny=1`); the localhost:1455 address that
    tab lands on (nothing listens there: the tab shows an error page)."""
    extra = "".join(f"&{name}={value}" for name, value in choices.items())
    tab = page.context.new_page()
    try:
        with tab.expect_request(CALLBACK) as landing, contextlib.suppress(PlaywrightError):
            tab.goto(authorize_url + extra)  # fails: nothing listens there
        return landing.value.url
    finally:
        tab.close()


def open_key(page: Page, name: str) -> None:
    """API keys → the key named `name` (its page)."""
    nav(page, "API keys")
    page.get_by_role("row").filter(has_text=name).get_by_role("link").click()
    expect(heading(page)).to_contain_text(name)


def meter_values(page: Page) -> list[float]:
    """The values of the quota bars (`<meter>`) on an account's page."""
    found: list[float] = page.locator("meter").evaluate_all("bars => bars.map(bar => bar.value)")
    return found


def reload_until(page: Page, done: Callable[[], bool], seconds: float = 20.0) -> None:
    """Reload the page (as a user presses F5) until `done()` holds, within `seconds`."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{page.url} did not change within {seconds} s"
        page.wait_for_timeout(300)
        page.reload()


def emulator(stack: Stack, method: str, path: str, payload: Any = None) -> Any:
    """The emulator's control API, from the scenario's thread."""
    return trio.from_thread.run(stack.control, method, path, payload)


def gateway_status(stack: Stack, key: str, path: str = RESPONSES) -> int:
    """The status of one request through the gateway with `key` (a plain HTTP call): a
    Responses turn, or a GET of another `path`."""
    headers = {"Authorization": f"Bearer {key}"}
    if path == RESPONSES:
        answer = httpx.post(stack.url + path, json=responses_body(), headers=headers, timeout=30)
    else:
        answer = httpx.get(stack.url + path, headers=headers, timeout=30)
    return answer.status_code


def gateway_answers(
    stack: Stack, key: str, status: int, path: str = RESPONSES, seconds: float = 5.0
) -> None:
    """`gateway_status` until the gateway answers `status` (a console change reaches the
    gateway within a second: NOTIFY), within `seconds`."""
    deadline = time.monotonic() + seconds
    while (found := gateway_status(stack, key, path)) != status:
        assert time.monotonic() < deadline, f"{path} still answers {found}, not {status}"
        time.sleep(0.1)


def in_database(stack: Stack, work: Callable[[Any], T]) -> T:
    """`work(conn)` in a transaction on the stack's database, from the scenario's thread."""
    done: T = trio.from_thread.run(stack.database.run, work)
    return done


def rows(stack: Stack, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """A query on the stack's database, from the scenario's thread."""
    return in_database(
        stack, lambda conn: [tuple(row) for row in conn.execute(sql, params).fetchall()]
    )


@dataclass
class AuditTrail:
    """The audit events a scenario has not looked at yet: `new()` gives those written since
    the last call (or since the trail was made) as (action, actor, details), oldest first."""

    stack: Stack
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.new()

    def new(self) -> list[tuple[str, str, dict[str, Any]]]:
        found = rows(
            self.stack,
            "SELECT id::text, action, actor, details FROM audit_events ORDER BY created_at, action",
        )
        fresh = [
            (action, actor, details)
            for id_, action, actor, details in found
            if id_ not in self.seen
        ]
        self.seen.update(row[0] for row in found)
        return fresh

    def actions(self) -> list[str]:
        """Only the actions of `new()`."""
        return [action for action, _, _ in self.new()]


def last_upstream_account(stack: Stack) -> str:
    """The emulator's label of the account that served the latest Responses turn."""
    found = emulator(stack, "GET", "requests")["requests"]
    served = [r for r in found if str(r.get("path", "")).endswith("/responses")]
    assert served, "no Responses turn reached the emulator"
    return stack.label_of(str(served[-1]["account_id"]))


def codex_exec(codex: str, stack: Stack, key: str, work: Path, prompt: str) -> str:
    """`codex exec` with the Pool key through the gateway (HTTP provider, no retries, no
    network but the gateway); its last message. Runs in the trio loop's process runner."""
    home, last = work / "codex-home", work / "last.txt"
    home.mkdir(parents=True, exist_ok=True)
    provider = (
        'model_providers.pooler={name="OpenAI",'
        f'base_url="{stack.url}/backend-api/codex",'
        'env_key="CODEX_POOLER_API_KEY",wire_api="responses",supports_websockets=false,'
        "requires_openai_auth=true,request_max_retries=0,stream_max_retries=0}"
    )
    argv = [
        codex, "exec", "--skip-git-repo-check", "--ephemeral",
        "--dangerously-bypass-approvals-and-sandbox", "--color", "never", "-m", "gpt-5.5",
        "-c", "model_provider=pooler", "-c", provider, "-c", "features.plugins=false",
        "-c", "analytics.enabled=false", "-c", "check_for_update_on_startup=false",
        "-o", str(last), prompt,
    ]  # fmt: skip
    env = {**os.environ, "CODEX_HOME": str(home), "CODEX_POOLER_API_KEY": key}
    code, _, stderr = trio.from_thread.run(run_client, argv, env, 120.0, work)
    assert code == 0, stderr[-3000:]
    return last.read_text()
