"""The overview at `/admin` (the signed-in home) against the real stack: its numbers move
with real traffic through the gateway (requests per minute, in flight while a paced stream
is held, websocket sessions), the accounts that need attention come first with the
verdict's words, an admin sees only its Pools, and the live stream (SSE) pushes within
seconds, holds no `admin` slot between refreshes, ends when the session ends, when its
lifetime is over and at once when the client leaves, and is bounded per session."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio
import trio_websocket
from console_support import OWNER_EMAIL, OWNER_PASSWORD, bootstrap_owner, browser, csrf_of, sign_in
from harness import Stack, open_stack, open_two_nodes, responses_body
from test_websocket_responses import auth, turn, ws_url

from pooler import store
from pooler.admin_ui import overview_page
from pooler.store import operators
from pooler.store.accounts import pause_account, set_lifecycle

RESPONSES = "/backend-api/codex/responses"
EVENTS = "/admin/overview/events"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"


def shown(html: str, key: str) -> str:
    """The text of the live number `key` on the page."""
    found = re.search(f'data-live="{re.escape(key)}">([^<]*)<', html)
    assert found, f"no number {key} on the page"
    return found.group(1)


async def pool_id(stack: Stack, name: str = "demo") -> UUID:
    found: UUID = await stack.database.run(lambda conn: store.get_pool(conn, name).id)
    return found


async def page_until(
    client: httpx.AsyncClient, done: Callable[[str], bool], seconds: float = 15
) -> str:
    """GET /admin until `done(html)` holds (bounded)."""
    with trio.fail_after(seconds):
        while True:
            page = await client.get("/admin")
            assert page.status_code == 200
            if done(page.text):
                return page.text
            await trio.sleep(0.2)


class Events:
    """The events of one SSE answer, read one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any] | None:
        """The next (event name, data), or None when the stream has ended."""
        name, data = "message", None
        async for line in self._lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return name, data
        return None


@asynccontextmanager
async def live(client: httpx.AsyncClient) -> AsyncIterator[Events]:
    async with client.stream("GET", EVENTS) as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        yield Events(response)


async def until(check: Callable[[], Awaitable[bool] | bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.05)


def overview_tasks() -> list[str]:
    """The tasks of this trio run that the overview's stream started."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if "overview_page" in task.name:
            found.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(root)
    return found


async def test_the_overview_is_the_home_and_moves_with_traffic(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        made = await bootstrap_owner(client)
        assert (made.status_code, made.headers["location"]) == (303, "/admin")
        assert (await client.get("/")).headers["location"] == "/admin"
        page = await client.get("/admin")
        assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
        assert '<a href="/admin" aria-current="page">Overview</a>' in page.text
        assert '<a href="/admin/pools">Pools</a>' in page.text  # not marked on the overview
        pools_page = (await client.get("/admin/pools")).text
        assert '<a href="/admin">Overview</a>' in pools_page
        assert '<a href="/admin/pools" aria-current="page">Pools</a>' in pools_page
        assert '<script src="/admin/static/overview.js" defer></script>' in page.text
        script = await client.get("/admin/static/overview.js")
        assert script.status_code == 200 and "EventSource" in script.text
        demo = await pool_id(stack)
        key = f"{demo}:"
        assert shown(page.text, key + "usable") == "3 / 3"
        assert shown(page.text, key + "rpm") == "0.0"
        assert "accounts&#39; worth left" in page.text or "accounts' worth left" in page.text

        async with stack.client() as api:
            for _ in range(3):
                assert (await api.post(RESPONSES, json=responses_body())).status_code == 200
        await stack.wait_for_logs(3)
        page_text = await page_until(client, lambda html: shown(html, key + "rpm") != "0.0")
        assert shown(page_text, key + "epm") == "0.0"
        assert shown(page_text, key + "in_flight") == "0"

        # A paced stream held open: in flight on this node; a websocket: a session.
        paced = {"client_metadata": {"x-emulator-delay-ms": "400", "x-emulator-events": "40"}}
        async with trio.open_nursery() as nursery, stack.client() as api:

            async def hold() -> None:
                async with api.stream("POST", RESPONSES, json=responses_body(**paced)) as held:
                    async for _ in held.aiter_bytes():
                        pass

            nursery.start_soon(hold)
            await page_until(client, lambda html: shown(html, key + "in_flight") == "1")
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
                held = await page_until(client, lambda html: shown(html, key + "sessions") == "1")
                assert shown(held, key + "in_flight") == "2"  # the socket holds a lease too
            nursery.cancel_scope.cancel()
        await page_until(client, lambda html: shown(html, key + "sessions") == "0")


async def test_accounts_that_need_attention_come_first_with_the_verdicts_words(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await bootstrap_owner(client)
        page = (await client.get("/admin")).text
        assert "Nothing needs attention" in page and 'id="attention-table" hidden' in page
        ids = await stack.account_ids()
        first, second, third = sorted(ids)
        await stack.database.run(
            lambda conn: pause_account(conn, UUID(ids[first]), "maintenance", actor="ops@x.org")
        )
        await stack.database.run(
            lambda conn: set_lifecycle(
                conn, UUID(ids[second]), "reauth_required", "refresh_token_reused"
            )
        )
        demo = await pool_id(stack)
        page = await page_until(
            client, lambda html: "maintenance" in html and "refresh_token_reused" in html
        )
        assert shown(page, f"{demo}:usable") == "1 / 3"
        rows = re.findall(r'<tr>\s*<td data-label="Account"><a href="([^"]+)">([^<]+)</a>', page)
        assert [label for _, label in rows] == [second, first]  # reauth before a pause
        assert rows[0][0] == f"/admin/upstreams/{ids[second]}"
        table = page.split('id="attention-rows"')[1].split("</tbody>")[0]
        assert "needs a new sign-in (reauth required): refresh_token_reused" in table
        assert "paused by ops@x.org" in table and "maintenance" in table
        assert third not in table


async def test_an_admin_sees_only_its_pools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        ids = await stack.account_ids()
        first, _, third = sorted(ids)

        def setup(conn: Any) -> UUID:
            theirs = store.create_pool(conn, "theirs")
            store.set_assignment(conn, "theirs", UUID(ids[third]))
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [theirs.id], actor="test")
            pause_account(conn, UUID(ids[first]), "only in demo", actor="test")
            return theirs.id

        theirs = await stack.database.run(setup)
        demo = await pool_id(stack)
        seen = await page_until(owner, lambda html: first in html and f"{theirs}:usable" in html)
        assert f"{demo}:usable" in seen
        async with browser(stack) as admin:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            page = await page_until(admin, lambda html: shown(html, f"{theirs}:usable") == "1 / 1")
            assert str(demo) not in page and ">demo<" not in page and first not in page
            async with live(admin) as events:
                found = await events.next()
                assert found is not None and found[0] == "overview"
                pushed = json.dumps(found[1])
                assert str(theirs) in pushed and str(demo) not in pushed and first not in pushed


async def test_the_live_stream_pushes_changes_and_ends_with_the_session(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await bootstrap_owner(client)
        demo = await pool_id(stack)
        csrf = csrf_of((await client.get("/admin")).text)
        async with live(client) as events:
            with trio.fail_after(10):
                name, first = await events.next() or ("", {})
            assert name == "overview"
            assert first["values"][f"{demo}:rpm"] == "0.0"
            assert first["attention"] == [] and first["layout"].startswith(str(demo))
            async with stack.client() as api:
                assert (await api.post(RESPONSES, json=responses_body())).status_code == 200
            with trio.fail_after(15):
                while True:
                    found = await events.next()
                    assert found is not None
                    if f"{demo}:rpm" in found[1].get("values", {}):
                        break
            assert found[1]["values"][f"{demo}:rpm"] != "0.0"
            assert "attention" not in found[1]  # only what changed is pushed
            await until(lambda: overview_page.STREAMS.total == 1)
            signed_out = await client.post("/logout", data={"csrf_token": csrf})
            assert signed_out.status_code == 303
            with trio.fail_after(10):
                assert await events.next() == ("end", "signed-out")
                assert await events.next() is None  # the answer is over
        await until(lambda: overview_page.STREAMS.total == 0)
        assert overview_tasks() == []
        assert (await client.get(EVENTS)).status_code == 401


async def test_an_idle_stream_holds_no_admin_slot(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview_page, "REFRESH_S", 300.0)  # idle after its first push
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await bootstrap_owner(client)
        # One admin slot and no queue: a page is refused at once if anything holds it.
        admission = stack.gateway.admission
        spec = stack.gateway.instance_settings.bulkheads["admin"]
        admission.configure({"admin": type(spec)(1, 0, 10.0)})
        async with live(client) as events:
            assert await events.next() is not None
            async with live(client) as more:  # opened while the first one is idle
                assert await more.next() is not None
                await until(lambda: admission.stats()["admin"].in_flight == 0)
                for _ in range(3):
                    assert (await client.get("/admin/pools")).status_code == 200
                assert overview_page.STREAMS.total == 2


async def test_the_stream_does_not_keep_an_idle_session_alive(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview_page, "REFRESH_S", 0.1)
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await bootstrap_owner(client)
        aged = "UPDATE console_sessions SET last_seen_at = now() - interval '5 minutes'"
        await stack.database.run(lambda conn: conn.execute(aged))
        async with live(client) as events:
            assert await events.next() is not None
            await trio.sleep(0.5)  # a few refreshes, each re-reading the session
        seen = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT last_seen_at < now() - interval '4 minutes' FROM console_sessions"
            ).fetchone()[0]
        )
        assert seen, "the live stream moved the session's idle clock"


async def test_a_client_that_leaves_ends_its_stream_at_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview_page, "REFRESH_S", 300.0)  # only the departure can end it
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await bootstrap_owner(client)
        async with live(client) as events:
            assert await events.next() is not None
            assert overview_page.STREAMS.total == 1 and overview_tasks()
        await until(lambda: overview_page.STREAMS.total == 0, seconds=5)
        await until(lambda: overview_tasks() == [], seconds=5)


async def test_streams_are_bounded_per_session_and_in_time(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview_page, "STREAM_LIFETIME_S", 3.0)
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        assert (await client.get(EVENTS)).status_code == 401  # nobody signed in
        await bootstrap_owner(client)
        async with browser(stack) as other:
            await sign_in(other, OWNER_EMAIL, OWNER_PASSWORD)
            async with (
                live(client) as one,
                live(client) as two,
                live(client) as three,
            ):
                for events in (one, two, three):
                    assert await events.next() is not None
                refused = await client.get(EVENTS)
                assert refused.status_code == 429 and refused.headers["retry-after"]
                async with live(other) as theirs:  # another session has its own three
                    assert await theirs.next() is not None
                    with trio.fail_after(10):  # the lifetime: each answer ends by itself
                        while await one.next() is not None:
                            pass
        await until(lambda: overview_page.STREAMS.total == 0)


async def test_rates_are_every_nodes_and_in_flight_this_nodes(db_url: str, tmp_path: Path) -> None:
    async with open_two_nodes(db_url, tmp_path) as (one, two), browser(one) as client:
        await bootstrap_owner(client)
        key = f"{await pool_id(one)}:"
        paced = {"client_metadata": {"x-emulator-delay-ms": "400", "x-emulator-events": "40"}}
        async with trio.open_nursery() as nursery, two.client() as api:
            assert (await api.post(RESPONSES, json=responses_body())).status_code == 200

            async def hold() -> None:
                async with api.stream("POST", RESPONSES, json=responses_body(**paced)) as held:
                    async for _ in held.aiter_bytes():
                        pass

            nursery.start_soon(hold)
            async with browser(two, cookies=client.cookies) as on_two:  # one session, two nodes
                await page_until(on_two, lambda html: shown(html, key + "in_flight") == "1")
            here = await page_until(client, lambda html: shown(html, key + "rpm") != "0.0")
            assert shown(here, key + "in_flight") == "0"  # held on the other node
            nursery.cancel_scope.cancel()
