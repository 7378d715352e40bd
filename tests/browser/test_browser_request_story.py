"""The request log tells the true story of real traffic, read in a real browser.

Real clients go through the gateway first: a turn of the real Codex CLI, and the real
OpenAI Python SDK on `/v1` with a failover (the conversation's account answers 500 once),
a continuity move (the conversation's account is paused before its next turn) and a key
whose reasoning-effort ceiling refuses what the SDK asks. The owner then finds each request
in Request logs by filter, opens it, and its page must say what the emulator saw: the
accounts tried in order with their statuses, the account a conversation moved from and
why, no upstream attempt for the refusal. An admin of the other Pool sees only that Pool's
rows, gets 404 for a request of the first, and its exports hold only its rows. Every field
of an export (CSV and JSON Lines, taken through the page's links with its filter) is shown,
with the same value, on the request's page.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import openai
import pytest
import trio
from browser_support import Console, require_playwright, run_scenario, sign_in
from harness import POOL, Stack, open_stack, require_tool

from pooler import store
from pooler.crypto import Keyring
from pooler.emulator.authjson import auth_json_for
from pooler.store import operators
from pooler.store.keys import EffortPolicy

require_playwright()
from browser_steps import (  # noqa: E402
    HOME,
    OWNER_EMAIL,
    OWNER_PASSWORD,
    codex_exec,
    create_owner,
    heading,
    nav,
)
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.e2e

OTHER = "other"  # a second Pool, served by the emulator's account-4 alone
OTHER_ACCOUNT = "account-4"
ADMIN_EMAIL = "other-admin@example.com"
ADMIN_PASSWORD = "the other Pool's admin password"
MODEL = "gpt-5.5"
DEADLINE_S = 30
# What the detail page calls each field of an export (the export uses the stored names).
SHOWN_AS = {
    "created_at": "Time (UTC)",
    "request_id": "Request id",
    "pool": "Pool",
    "key_prefix": "Key",
    "route": "Route",
    "transport": "Transport",
    "model": "Model",
    "stream": "Stream",
    "status_code": "Status",
    "outcome": "Outcome",
    "error_code": "Error code",
    "account_label": "Account",
    "account_id": "Account id",
    "retries": "Retries",
    "continuity": "Continuity",
    "duration_ms": "Duration (ms)",
    "ttfb_ms": "Time to first byte (ms)",
    "input_tokens": "Input tokens",
    "cached_input_tokens": "Cached input tokens",
    "output_tokens": "Output tokens",
    "reasoning_tokens": "Reasoning tokens",
    "total_tokens": "Total tokens",
    "request_bytes": "Bytes in",
    "response_bytes": "Bytes out",
    "client_request_id": "Client request id",
    "client_ip": "Client IP",
    "client_user_agent": "User agent",
    "cost_usd": "API-equivalent cost (USD)",
}


@dataclass
class Traffic:
    """What the clients sent and what the emulator saw for each story (emulator entries:
    `label`, `status`, oldest first)."""

    cli: list[dict[str, Any]] = field(default_factory=list)
    failover_id: str = ""
    failover: list[dict[str, Any]] = field(default_factory=list)
    moved_id: str = ""
    moved_from: str = ""
    moved: list[dict[str, Any]] = field(default_factory=list)
    refused_id: str = ""
    refused_code: str = ""
    refused_seen: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # name -> raw key
    other_ids: set[UUID] = field(default_factory=set)  # the other Pool's log row ids
    other_requests: set[str] = field(default_factory=set)  # and their request ids
    failover_log_id: UUID | None = None
    demo_pool_id: UUID | None = None


# --- the traffic (trio side) --------------------------------------------------------------


async def seen(stack: Stack) -> list[dict[str, Any]]:
    """The emulator's `/responses` log, each entry with its account's label."""
    entries: list[dict[str, Any]] = await stack.upstream_requests("/responses")
    for entry in entries:
        entry["label"] = stack.label_of(entry["account_id"]) if entry["account_id"] else None
    return entries


async def seen_during(stack: Stack, work: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Run `work()` in a thread (a blocking client); its result and what the emulator saw
    meanwhile."""
    before = len(await seen(stack))
    with trio.fail_after(DEADLINE_S * 4):
        result = await trio.to_thread.run_sync(work)
    return result, (await seen(stack))[before:]


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=30)


def sdk_turn(stack: Stack, key: str, conversation: str) -> str:
    """One `/v1/responses` turn of the OpenAI SDK in `conversation`; its request id."""
    raw = sdk(stack, key).responses.with_raw_response.create(
        model=MODEL, input="Reply with exactly: ok", prompt_cache_key=conversation
    )
    assert raw.parse().output_text, "the SDK read no answer"
    return str(raw.headers["x-request-id"])


def sdk_refused(stack: Stack, key: str) -> tuple[str, str]:
    """A turn asking a high reasoning effort; the refusal's request id and error code."""
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(stack, key).responses.create(
            model=MODEL, input="Reply with exactly: ok", reasoning={"effort": "high"}
        )
    return str(refused.value.response.headers["x-request-id"]), str(refused.value.code)


async def logged(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request's log row (waits for the LogWriter)."""
    with trio.fail_after(10):
        while True:
            found = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT id, status_code, error_code, account_label, continuity"
                    " FROM request_logs WHERE request_id = %s",
                    (request_id,),
                ).fetchone()
            )
            if found is not None:
                names = ("id", "status", "error", "account", "continuity")
                return dict(zip(names, found, strict=True))
            await trio.sleep(0.02)


async def pause(stack: Stack, label: str) -> None:
    """Pause the account (as its page would) and wait until routing knows."""
    account_id = (await stack.account_ids())[label]
    await stack.database.run(
        lambda conn: store.pause_account(conn, UUID(account_id), actor=OWNER_EMAIL)
    )
    handle = stack.gateway.pool_supervisor.accounts[account_id]
    with trio.fail_after(5):
        while handle.snapshot.lifecycle != "paused":
            await trio.sleep(0.01)


def prepare(conn: Any, stack: Stack) -> dict[str, str]:
    """The other Pool with account-4 (taken from demo), one key per story, the other
    Pool's admin; the raw keys by name."""
    ids = dict(conn.execute("SELECT label, id FROM upstream_accounts").fetchall())
    store.delete_account(conn, ids[OTHER_ACCOUNT], actor=OWNER_EMAIL)
    other = store.create_pool(conn, OTHER, actor=OWNER_EMAIL)
    keyring = Keyring(stack.config.upstream_secret_key, stack.config.upstream_secret_keys_old)
    account = next(a for a in stack.emulator.accounts if a.label == OTHER_ACCOUNT)
    store.import_account(conn, keyring, OTHER, auth_json_for(account), OTHER_ACCOUNT)
    secret = stack.config.secret_key
    raw = {
        name: store.create_key(conn, secret, POOL, name, actor=OWNER_EMAIL)[0]
        for name in ("failover", "mover")
    }
    raw["narrow"] = store.create_key(
        conn, secret, POOL, "narrow", effort=EffortPolicy("max", "low"), actor=OWNER_EMAIL
    )[0]
    raw["theirs"] = store.create_key(conn, secret, OTHER, "theirs", actor=OWNER_EMAIL)[0]
    admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
    operators.assign_pools(conn, admin.id, [other.id], actor=OWNER_EMAIL)
    return raw


async def real_traffic(stack: Stack, codex: str, work: Path) -> Traffic:
    traffic = Traffic(keys=await stack.database.run(partial(prepare, stack=stack)))
    await stack.gateway.reload()
    keys = traffic.keys

    # The Codex CLI, with the seeded demo key.
    _, traffic.cli = await seen_during(
        stack, partial(codex_exec, codex, stack, stack.key, work, "Reply with exactly: hi")
    )
    assert traffic.cli and all(e["status"] == 200 for e in traffic.cli), traffic.cli

    # (a) A failover: the conversation's account answers 500 once, another serves.
    _, [first] = await seen_during(stack, partial(sdk_turn, stack, keys["failover"], "conv-f"))
    await stack.fault(first["label"], "server_error_500")
    traffic.failover_id, traffic.failover = await seen_during(
        stack, partial(sdk_turn, stack, keys["failover"], "conv-f")
    )
    assert [(e["label"], e["status"]) for e in traffic.failover] == [
        (first["label"], 500),
        (traffic.failover[1]["label"], 200),
    ], traffic.failover
    assert traffic.failover[1]["label"] != first["label"]

    # (b) A continuity move: the conversation's account is paused before its next turn.
    _, [pinned] = await seen_during(stack, partial(sdk_turn, stack, keys["mover"], "conv-m"))
    traffic.moved_from = pinned["label"]
    await pause(stack, traffic.moved_from)
    traffic.moved_id, traffic.moved = await seen_during(
        stack, partial(sdk_turn, stack, keys["mover"], "conv-m")
    )
    assert [e["label"] for e in traffic.moved] != [traffic.moved_from]

    # (c) A key whose ceiling (max:low) refuses the effort the SDK asks.
    (traffic.refused_id, traffic.refused_code), traffic.refused_seen = await seen_during(
        stack, partial(sdk_refused, stack, keys["narrow"])
    )
    assert traffic.refused_code == "reasoning_effort_not_allowed"

    # The other Pool's one request.
    other_id, [theirs] = await seen_during(
        stack, partial(sdk_turn, stack, keys["theirs"], "conv-o")
    )
    assert theirs["label"] == OTHER_ACCOUNT  # the other Pool's own account served it

    refused = await logged(stack, traffic.refused_id)  # the refusal is logged
    assert (refused["status"], refused["error"]) == (400, traffic.refused_code)
    traffic.failover_log_id = (await logged(stack, traffic.failover_id))["id"]
    traffic.demo_pool_id = (await stack.database.run(lambda conn: store.get_pool(conn, POOL))).id
    await logged(stack, traffic.moved_id)
    traffic.other_ids = {(await logged(stack, other_id))["id"]}
    traffic.other_requests = {other_id}
    return traffic


# --- the browser (the scenario's thread) --------------------------------------------------


def facts(page: Page) -> dict[str, str]:
    """The detail page's "Request" facts: label -> the text shown."""
    region = page.get_by_role("region", name="Request", exact=True)
    found: dict[str, str] = region.evaluate(
        """section => Object.fromEntries([...section.querySelectorAll("dt")].map(
            term => [term.textContent.trim(), term.nextElementSibling.textContent.trim()]))"""
    )
    return found


def table_rows(page: Page, heading_name: str) -> list[dict[str, str]]:
    """A table's rows in the region headed `heading_name`, as header -> cell text."""
    table = page.get_by_role("region", name=heading_name, exact=True).get_by_role("table").first
    found: list[dict[str, str]] = table.evaluate(
        """table => {
            const names = [...table.querySelectorAll("thead th")].map(th => th.textContent.trim());
            return [...table.querySelectorAll("tbody tr")].map(tr => Object.fromEntries(
                [...tr.querySelectorAll("td")].map((td, i) => [names[i], td.textContent.trim()])));
        }"""
    )
    return found


def routing_facts(page: Page) -> dict[str, str]:
    region = page.get_by_role("region", name="Routing", exact=True)
    found: dict[str, str] = region.evaluate(
        """section => Object.fromEntries([...section.querySelectorAll("dl dt")].map(
            term => [term.textContent.trim(), term.nextElementSibling.textContent.trim()]))"""
    )
    return found


def log_rows(page: Page) -> Any:
    return page.get_by_role("region", name=re.compile(r"UTC$")).locator("tbody tr")


def filter_by(page: Page, **choices: str) -> None:
    """Clear the filter, set the named fields (text fields filled, selects chosen) and
    apply it; the filter is in the URL."""
    page.goto("/admin/request-logs")
    form = page.get_by_role("search")
    for label, value in choices.items():
        target = form.get_by_label(label.replace("_", " "), exact=True)
        if target.evaluate("e => e.tagName") == "SELECT":
            target.select_option(value)
        else:
            target.fill(value)
    form.get_by_role("button", name="Filter").click()
    expect(heading(page)).to_have_text("Request logs")


def open_only_row(console: Console, page: Page, name: str) -> None:
    rows = log_rows(page)
    expect(rows).to_have_count(1)
    console.look(page, f"logs-{name}")
    rows.first.get_by_role("link").click()
    expect(heading(page)).to_contain_text("Request")
    console.look(page, f"detail-{name}")


def download(page: Page, name: str) -> bytes:
    """Follow the list's export link `name` (CSV, JSON Lines); the file's bytes."""
    with page.expect_download() as taken:
        page.get_by_role("link", name=name, exact=True).click()
    return Path(taken.value.path()).read_bytes()


def exports(page: Page) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Both exports of the list page's filter: CSV rows and JSON Lines objects."""
    csv_rows = list(csv.DictReader(io.StringIO(download(page, "CSV").decode())))
    lines = download(page, "JSON Lines").decode().splitlines()
    return csv_rows, [json.loads(line) for line in lines if line]


def same_value(exported: Any, shown: str) -> bool:
    """Whether the page shows `exported` (a JSON Lines value)."""
    if exported is None or exported == "":
        return shown == "—"
    if isinstance(exported, bool):
        return shown == ("yes" if exported else "no")
    if isinstance(exported, int | float):
        # Shown with thousands separators; durations rounded (to 1 ms from 10 ms on).
        rounding = 0.5 if exported >= 10 else 0.05
        return abs(float(shown.replace(",", "")) - exported) <= rounding
    try:
        moment = datetime.fromisoformat(str(exported))
    except ValueError:
        return shown == str(exported)
    return shown.startswith(moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:23])


def export_matches_page(
    page: Page, csv_rows: list[dict[str, str]], jsonl: list[dict[str, Any]]
) -> None:
    """Every exported field is shown on the request's page (page open), same value."""
    [row] = jsonl
    [csv_row] = csv_rows
    assert list(csv_row) == list(row), (list(csv_row), list(row))  # one set of fields
    unmapped = set(row) - set(SHOWN_AS)
    assert not unmapped, f"exported but not shown on the detail page: {unmapped}"
    shown = facts(page)
    for name, value in row.items():
        label = SHOWN_AS[name]
        assert label in shown, f"{name} is exported, but the page shows no {label!r}"
        assert same_value(value, shown[label]), (name, value, shown[label])
        assert (csv_row[name] == "") == (value is None or value == ""), (name, csv_row[name])


def owner_reads_the_story(console: Console, stack: Stack, traffic: Traffic) -> None:
    page = console.page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    expect(page).to_have_url(HOME)
    nav(page, "Request logs")
    expect(heading(page)).to_have_text("Request logs")
    expect(log_rows(page).first).to_be_visible()
    console.look(page, "logs")

    # The Codex CLI's turn: the demo key, the Codex route.
    filter_by(page, Key="demo", Route="responses")
    expect(page).to_have_url(re.compile(r"key=demo"))
    expect(log_rows(page)).to_have_count(len(traffic.cli))
    assert len(traffic.cli) == 1, traffic.cli  # one Responses turn
    open_only_row(console, page, "codex-cli")
    shown = facts(page)
    assert shown["Account"] == traffic.cli[-1]["label"], shown
    assert shown["Status"] == "200" and "codex" in shown["User agent"].lower(), shown
    assert shown["Client request id"] != "—", shown  # the CLI names its own requests
    assert [a["Account"] for a in table_rows(page, "Attempts")] == [traffic.cli[-1]["label"]]

    # (a) The failover: both attempts in the order the emulator saw them.
    filter_by(page, Key="failover", Continuity="moved")
    open_only_row(console, page, "failover")
    expect(heading(page)).to_contain_text(traffic.failover_id)
    failed, served = traffic.failover
    attempts = table_rows(page, "Attempts")
    assert [(a["Account"], a["Status"]) for a in attempts] == [
        (failed["label"], "500"),
        (served["label"], "200"),
    ], attempts
    assert attempts[0]["Error code"] not in ("", "—"), attempts
    shown = facts(page)
    assert (shown["Account"], shown["Status"], shown["Retries"]) == (served["label"], "200", "1")
    story = routing_facts(page)
    assert story["Continuity"] == (
        f"moved (from {failed['label']}, because {attempts[0]['Error code']})"
    ), story
    assert "continuity" not in story and "continuity_reason" not in story  # said once, in words
    verdicts = {c["Account"]: c["Verdict"] for c in table_rows(page, "Routing")}
    assert verdicts[failed["label"]] == attempts[0]["Error code"]
    assert verdicts[served["label"]] == "chosen"
    detail = page.url
    # Its exports (the list's filter) hold this row and only fields the page shows.
    page.go_back()
    csv_rows, jsonl = exports(page)
    assert [r["request_id"] for r in jsonl] == [traffic.failover_id]
    page.goto(detail)
    export_matches_page(page, csv_rows, jsonl)

    # (b) The continuity move: from the paused account, and why.
    filter_by(page, Key="mover", Continuity="moved")
    open_only_row(console, page, "moved")
    expect(heading(page)).to_contain_text(traffic.moved_id)
    [served] = traffic.moved
    story = routing_facts(page)
    assert story["Continuity"] == f"moved (from {traffic.moved_from}, because not_active)", story
    verdicts = {c["Account"]: c["Verdict"] for c in table_rows(page, "Routing")}
    assert verdicts[traffic.moved_from] == "not_active"
    assert verdicts[served["label"]] == "chosen"
    assert [(a["Account"], a["Status"]) for a in table_rows(page, "Attempts")] == [
        (served["label"], "200")
    ]
    assert facts(page)["Account"] == served["label"]

    # (c) The refusal: its code, no account, nothing went upstream.
    assert traffic.refused_seen == []
    filter_by(page, Status="4xx", Error_code=traffic.refused_code)
    open_only_row(console, page, "refused")
    expect(heading(page)).to_contain_text(traffic.refused_id)
    shown = facts(page)
    assert (shown["Status"], shown["Error code"], shown["Account"]) == (
        "400",
        traffic.refused_code,
        "—",
    ), shown
    attempts_region = page.get_by_role("region", name="Attempts", exact=True)
    expect(attempts_region.get_by_role("table")).to_have_count(0)
    expect(attempts_region).to_contain_text("No attempt went upstream")


def admin_sees_its_pool(console: Console, traffic: Traffic) -> None:
    page = console.page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    expect(page).to_have_url(HOME)
    nav(page, "Request logs")
    rows = log_rows(page)
    expect(rows).to_have_count(len(traffic.other_ids))
    console.look(page, "admin-logs")
    hrefs = rows.get_by_role("link").evaluate_all("links => links.map(a => a.pathname)")
    assert {UUID(h.rsplit("/", 1)[1]) for h in hrefs} == traffic.other_ids
    for text in rows.all_inner_texts():
        assert OTHER in text and POOL not in text.split(), text
    csv_rows, jsonl = exports(page)
    assert {r["pool"] for r in csv_rows} == {OTHER} == {r["pool"] for r in jsonl}
    assert {r["request_id"] for r in csv_rows} == traffic.other_requests
    assert [r["request_id"] for r in jsonl] == [r["request_id"] for r in csv_rows]
    # Another Pool's request: not found.
    answer = page.goto(f"/admin/request-logs/{traffic.failover_log_id}")
    assert answer is not None and answer.status == 404
    expect(heading(page)).to_have_text("Not found")
    console.look(page, "admin-not-found")
    # Another Pool chosen in the filter (its id in the URL): the list and exports too.
    for path in ("", "/export.csv", "/export.jsonl"):
        answer = page.request.get(f"/admin/request-logs{path}?pool={traffic.demo_pool_id}")
        assert answer.status == 404, (path, answer.status)
        assert traffic.failover_id not in answer.text()


def the_story(console: Console, stack: Stack, traffic: Traffic) -> None:
    owner_reads_the_story(console, stack, traffic)
    admin_sees_its_pool(console, traffic)


async def test_the_request_log_tells_the_story_of_real_traffic(
    db_url: str, tmp_path: Path, chromium: str
) -> None:
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    async with open_stack(db_url, tmp_path / "gw", accounts=4) as stack:
        await create_owner(stack)
        work = tmp_path / "codex"
        work.mkdir()
        traffic = await real_traffic(stack, codex, work)
        flow = partial(the_story, stack=stack, traffic=traffic)
        console = await run_scenario(flow, stack.url, tmp_path, chromium)
    assert len(console.taken) >= 2 * 10
