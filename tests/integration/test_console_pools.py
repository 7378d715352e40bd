"""The console's Pools page against the real stack: the list's figures (usable accounts from
the gateway's memory, keys, requests in the last hour), create / edit / disable / delete with
their refusals and CSRF, escaped names, an admin's scope, and a running gateway applying a
change made on the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, csrf_of, sign_in
from harness import POOL, Stack, open_stack
from test_key_policy_admin import Cli, stack_env, use_env

from pooler.store import accounts, operators
from pooler.store import pools as pool_store
from pooler.store.common import ConflictError

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
WITHIN_A_SECOND = 1.0
SETTLE_S = 10.0  # bound on waiting for the gateway's start-up (account actors) in tests


async def run(stack: Stack, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    def execute(conn: Any) -> list[tuple[Any, ...]]:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []

    return await stack.database.run(execute)


async def pool_id(stack: Stack, name: str) -> UUID:
    [(found,)] = await run(stack, "SELECT id FROM pools WHERE name = %s", name)
    return UUID(str(found))


async def signed_in_owner(stack: Stack, client: httpx.AsyncClient) -> str:
    await stack.database.run(lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD))
    assert (await sign_in(client)).status_code == 303
    return csrf_of((await client.get("/admin/pools")).text)


def row_of(html: str, name: str) -> str:
    """The list's table row of the Pool named `name` (its cells' text, tags dropped)."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        if f">{name}</a>" in row:
            return " ".join(re.sub(r"<[^>]+>", " ", row).split())
    raise AssertionError(f"no row for {name}")


def field_error(html: str, field: str) -> str:
    found = re.search(rf'id="f-{field}-error"[^>]*>([^<]*)<', html)
    assert found, f"no error beside {field}"
    return found.group(1)


async def audit_actions(stack: Stack, target: UUID) -> list[tuple[str, str]]:
    rows = await run(
        stack,
        "SELECT action, actor FROM audit_events WHERE target_id = %s ORDER BY created_at",
        str(target),
    )
    return [(action, actor) for action, actor in rows]


async def test_the_list_shows_each_pools_figures(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await signed_in_owner(stack, client)
        demo = await pool_id(stack, POOL)
        empty = await stack.database.run(
            lambda conn: pool_store.create_pool(conn, "empty", "round_robin", actor="test")
        )
        # Two requests in the last hour, one older, one of another Pool.
        await run(
            stack,
            "INSERT INTO request_logs (request_id, created_at, pool_id, route, outcome) VALUES"
            " ('r1', now() - interval '5 minutes', %s, 'responses', 'ok'),"
            " ('r2', now() - interval '59 minutes', %s, 'responses', 'ok'),"
            " ('r3', now() - interval '2 hours', %s, 'responses', 'ok'),"
            " ('r4', now(), %s, 'responses', 'ok')",
            demo,
            demo,
            demo,
            empty.id,
        )
        with trio.fail_after(SETTLE_S):
            while "3 / 3" not in row_of((await client.get("/admin/pools")).text, POOL):
                await trio.sleep(0.05)
        html = (await client.get("/admin/pools")).text
        # name, status, usable / accounts, active keys, requests (last hour), strategy
        assert row_of(html, POOL) == f"{POOL} enabled 3 / 3 1 2 Least used"
        assert row_of(html, "empty") == "empty enabled 0 / 0 0 1 Round robin"
        assert f'href="/admin/pools/{demo}"' in html

        # A paused account is not usable: the figure comes from the gateway's memory.
        [first, *_] = await stack.database.run(lambda conn: accounts.list_accounts(conn, POOL))
        await stack.database.run(lambda conn: accounts.pause_account(conn, first.id, actor="test"))
        with trio.fail_after(SETTLE_S):
            while "2 / 3" not in row_of((await client.get("/admin/pools")).text, POOL):
                await trio.sleep(0.05)
        detail = (await client.get(f"/admin/pools/{demo}")).text
        assert "<dd>2 / 3</dd>" in detail and "<dd>2</dd>" in detail


async def test_create_edit_disable_delete_and_their_refusals(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        token = await signed_in_owner(stack, client)
        policy = {
            "strategy": "round_robin",
            "quota_threshold_percent": "",
            "retry_budget": "5",
            "max_in_flight_per_account": "",
            "continuity_enabled": "on",
            "v1_enabled": "on",
        }

        # Create: the Pool, its policy, audited with the operator as actor.
        made = await client.post(
            "/admin/pools", data={"csrf_token": token, "name": "team", **policy}
        )
        assert made.status_code == 303
        team = await pool_id(stack, "team")
        assert made.headers["location"] == f"/admin/pools/{team}"
        stored = await stack.database.run(lambda conn: pool_store.get_pool(conn, "team"))
        assert (stored.strategy, stored.retry_budget, stored.max_in_flight_per_account) == (
            "round_robin",
            5,
            32,
        )
        assert await audit_actions(stack, team) == [("pool.create", OWNER_EMAIL)]

        # Refused: a duplicate name, a number that is not one, a value out of range; each
        # shown beside its field, 400, nothing stored.
        again = await client.post(
            "/admin/pools", data={"csrf_token": token, "name": "team", **policy}
        )
        assert again.status_code == 400
        assert "already exists" in field_error(again.text, "name")
        assert 'value="team"' in again.text  # what was typed is kept
        for field, value, message in (
            ("retry_budget", "five", "must be a whole number"),
            ("retry_budget", "99", "Retry budget must be between 0 and 20"),
            ("quota_threshold_percent", "nan", "Quota threshold (%) must be in (0, 100]"),
            ("max_in_flight_per_account", "0", "between 1 and 100000"),
        ):
            refused = await client.post(
                "/admin/pools",
                data={"csrf_token": token, "name": "other", **policy, field: value},
            )
            assert refused.status_code == 400, (field, value)
            assert message in field_error(refused.text, field)
        blank = await client.post("/admin/pools", data={"csrf_token": token, "name": " x"})
        assert blank.status_code == 400 and "surrounding spaces" in field_error(blank.text, "name")
        assert await run(stack, "SELECT 1 FROM pools WHERE name IN ('other', ' x')") == []

        # CSRF: without the token, or with another, nothing is created or changed.
        for data in ({}, {"csrf_token": "wrong"}):
            forged = await client.post("/admin/pools", data={**data, "name": "forged"})
            assert forged.status_code == 403
            forged = await client.post(
                f"/admin/pools/{team}", data={**data, **policy, "retry_budget": "1"}
            )
            assert forged.status_code == 403
            forged = await client.post(f"/admin/pools/{team}/delete", data={**data, "confirm": "1"})
            assert forged.status_code == 403
        assert await run(stack, "SELECT 1 FROM pools WHERE name = 'forged'") == []
        assert (await pool_id(stack, "team")) == team

        # Edit the routing policy (an unchecked switch is off).
        edit = {
            "csrf_token": token,
            "strategy": "fill_first",
            "quota_threshold_percent": "90.5",
            "retry_budget": "2",
            "max_in_flight_per_account": "4",
        }
        assert (await client.post(f"/admin/pools/{team}", data=edit)).status_code == 303
        stored = await stack.database.run(lambda conn: pool_store.get_pool(conn, "team"))
        assert (
            stored.strategy,
            stored.quota_threshold_percent,
            stored.retry_budget,
            stored.max_in_flight_per_account,
            stored.continuity_enabled,
            stored.v1_enabled,
        ) == ("fill_first", 90.5, 2, 4, False, False)
        page = (await client.get(f"/admin/pools/{team}")).text
        assert 'value="90.5"' in page and '<option value="fill_first" selected>' in page
        bad = await client.post(f"/admin/pools/{team}", data={**edit, "strategy": "random"})
        assert bad.status_code == 400
        assert "strategy must be one of" in field_error(bad.text, "strategy")
        assert (await pool_store_get(stack, "team")).strategy == "fill_first"

        # Disable, enable.
        status = f"/admin/pools/{team}/status"
        off = await client.post(status, data={"csrf_token": token, "status": "disabled"})
        assert off.status_code == 303
        assert (await pool_store_get(stack, "team")).status == "disabled"
        assert "team disabled" in row_of((await client.get("/admin/pools")).text, "team")
        on = await client.post(status, data={"csrf_token": token, "status": "active"})
        assert on.status_code == 303 and (await pool_store_get(stack, "team")).status == "active"
        wrong = await client.post(status, data={"csrf_token": token, "status": "archived"})
        assert wrong.status_code == 400

        # Delete: refused while keys or accounts depend on the Pool, naming them.
        demo = await pool_id(stack, POOL)
        unconfirmed = await client.post(
            f"/admin/pools/{team}/delete", data={"csrf_token": token, "confirm_name": "tea"}
        )
        assert unconfirmed.status_code == 400 and "exactly as shown" in unconfirmed.text
        assert await pool_id(stack, "team") == team
        kept = await client.post(
            f"/admin/pools/{demo}/delete", data={"csrf_token": token, "confirm_name": POOL}
        )
        assert kept.status_code == 409
        assert (
            "pool &#39;demo&#39; still has 1 active API key and 3 assigned accounts: revoke its"
            " keys and unassign its accounts first" in kept.text
        )
        assert await pool_id(stack, POOL) == demo
        with pytest.raises(ConflictError, match="1 active API key and 3 assigned accounts"):
            await stack.database.run(lambda conn: pool_store.delete_pool(conn, POOL))
        gone = await client.post(
            f"/admin/pools/{team}/delete", data={"csrf_token": token, "confirm_name": "team"}
        )
        assert gone.status_code == 303 and gone.headers["location"] == "/admin/pools?deleted=1#main"
        assert "The Pool was deleted." in (await client.get("/admin/pools?deleted=1")).text
        assert await run(stack, "SELECT 1 FROM pools WHERE id = %s", team) == []
        assert [a for a, _ in await audit_actions(stack, team)] == [
            "pool.create",
            "pool.update",
            "pool.update",
            "pool.update",
            "pool.delete",
        ]
        assert (await client.get(f"/admin/pools/{team}")).status_code == 404


async def pool_store_get(stack: Stack, name: str) -> Any:
    return await stack.database.run(lambda conn: pool_store.get_pool(conn, name))


async def test_names_are_escaped(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        token = await signed_in_owner(stack, client)
        name = '<script>alert("x")</script>'
        made = await client.post(
            "/admin/pools", data={"csrf_token": token, "name": name, "strategy": "weighted"}
        )
        assert made.status_code == 303
        escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
        for page in ("/admin/pools", made.headers["location"]):
            html = (await client.get(page)).text
            assert "<script>" not in html and escaped in html
        dup = await client.post("/admin/pools", data={"csrf_token": token, "name": name})
        assert dup.status_code == 400 and "<script>" not in dup.text


async def test_an_admin_sees_and_changes_only_assigned_pools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:

        def setup(conn: Any) -> tuple[UUID, UUID]:
            mine = pool_store.create_pool(conn, "mine", actor="test")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            return mine.id, pool_store.get_pool(conn, POOL).id

        mine, theirs = await stack.database.run(setup)
        assert (await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 303
        html = (await client.get("/admin/pools")).text
        assert ">mine</a>" in html and f">{POOL}</a>" not in html
        assert "New Pool" not in html  # creating is the owner's
        token = csrf_of(html)
        before = await run(stack, "SELECT * FROM pools ORDER BY name")
        audit_before = await run(stack, "SELECT count(*) FROM audit_events")

        assert (await client.get(f"/admin/pools/{theirs}")).status_code == 404
        for path, data in (
            (f"/admin/pools/{theirs}", {"strategy": "round_robin", "retry_budget": "1"}),
            (f"/admin/pools/{theirs}/status", {"status": "disabled"}),
            (f"/admin/pools/{theirs}/delete", {}),
        ):
            refused = await client.post(path, data={"csrf_token": token, **data})
            assert refused.status_code == 404, path
        made = await client.post("/admin/pools", data={"csrf_token": token, "name": "new"})
        assert made.status_code == 403
        own_delete = await client.post(f"/admin/pools/{mine}/delete", data={"csrf_token": token})
        assert own_delete.status_code == 403
        assert await run(stack, "SELECT * FROM pools ORDER BY name") == before
        assert await run(stack, "SELECT count(*) FROM audit_events") == audit_before

        page = (await client.get(f"/admin/pools/{mine}")).text
        assert "Delete Pool" not in page
        saved = await client.post(
            f"/admin/pools/{mine}",
            data={"csrf_token": token, "strategy": "weighted", "v1_enabled": "on"},
        )
        assert saved.status_code == 303
        assert (await pool_store_get(stack, "mine")).strategy == "weighted"
        assert await audit_actions(stack, mine) == [
            ("pool.create", "test"),
            ("pool.update", ADMIN_EMAIL),
        ]


async def test_a_running_gateway_applies_a_change_made_on_the_page(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_stack(db_url, tmp_path, accounts=1) as stack,
        browser(stack) as client,
        stack.client() as api,
    ):
        token = await signed_in_owner(stack, client)
        demo = await pool_id(stack, POOL)
        assert (await api.get("/v1/models")).status_code == 200
        assert stack.gateway.pool_policy(str(demo)).strategy == "least_used"

        saved = await client.post(
            f"/admin/pools/{demo}",
            data={"csrf_token": token, "strategy": "round_robin", "continuity_enabled": "on"},
        )
        assert saved.status_code == 303
        with trio.fail_after(WITHIN_A_SECOND):
            while (response := await api.get("/v1/models")).status_code != 403:
                await trio.sleep(0.02)
        assert response.json()["error"]["code"] == "v1_compatibility_disabled"
        assert stack.gateway.pool_policy(str(demo)).strategy == "round_robin"
        assert (await api.get("/backend-api/codex/models")).status_code == 200

        off = await client.post(
            f"/admin/pools/{demo}/status", data={"csrf_token": token, "status": "disabled"}
        )
        assert off.status_code == 303
        with trio.fail_after(WITHIN_A_SECOND):
            while (response := await api.get("/backend-api/codex/models")).status_code != 403:
                await trio.sleep(0.02)
        assert response.json()["error"]["code"] == "pool_disabled"


async def test_the_cli_deletes_a_pool_with_the_same_refusal(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack:
        use_env(monkeypatch, stack_env(stack.config, db_url))
        cli = Cli(capsys)
        refused = await cli.refused("pool", "delete", POOL)
        assert "still has 1 active API key and 1 assigned account:" in refused
        await cli.ok("pool", "create", "spare")
        assert "pool spare deleted" in await cli.ok("pool", "delete", "spare")
        assert await run(stack, "SELECT name FROM pools") == [(POOL,)]
        assert "not found" in await cli.refused("pool", "delete", "spare")
