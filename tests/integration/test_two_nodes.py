"""Two gateways on one database (DESIGN §11): keys, Pools and settings reach both through
NOTIFY; quota evidence and conversation pins are written behind by one node and read by the
other; an account's token is refreshed once, whichever node's timer fires first.

Each node runs its own `run_gateway` with its own `Database` (pool and LISTEN connection),
as two `pooler serve` processes would; they share the emulator and the seeded Pool.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import POOL, Stack, open_two_nodes, parse_sse, responses_body

from pooler.store import instance_settings as settings_store
from pooler.store import keys as key_store
from pooler.store import pools as pool_store
from pooler.web import gateway as gateway_module
from pooler.web.leasing import continuity_digest

RESPONSES = "/backend-api/codex/responses"
# Configuration changes travel by NOTIFY and a reload: both nodes within a second.
WITHIN_A_SECOND = 1.0
# Quota evidence and pins wait for the next write-behind (every 0.5 s), then NOTIFY.
WRITE_BEHIND_DEADLINE_S = 2.0


async def within(seconds: float, what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; fail naming `what` if it does not within `seconds`."""
    with trio.move_on_after(seconds):
        while not await check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"{what}: not within {seconds} s")


async def pool_id(stack: Stack) -> str:
    rows = await stack.database.run(
        lambda conn: conn.execute("SELECT id::text FROM pools WHERE name = %s", (POOL,)).fetchall()
    )
    return str(rows[0][0])


async def served_by(stack: Stack) -> str:
    """The emulator label of the account that answered the last upstream request."""
    return stack.label_of((await stack.upstream_requests())[-1]["account_id"])


async def status_with_key(node: Stack, raw_key: str) -> int:
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        response = await client.post(
            RESPONSES, json=responses_body(), headers={"authorization": f"Bearer {raw_key}"}
        )
    return response.status_code


async def test_a_key_created_or_revoked_on_one_node_applies_on_both(
    db_url: str, tmp_path: Path
) -> None:
    async with open_two_nodes(db_url, tmp_path) as (a, b):
        secret = a.config.secret_key
        raw, key = await a.database.run(
            lambda conn: key_store.create_key(conn, secret, POOL, "late", actor="test")
        )
        with trio.fail_after(WITHIN_A_SECOND):  # measured from the commit, for both nodes
            for node in (a, b):
                while (status := await status_with_key(node, raw)) == 401:
                    await trio.sleep(0.02)
                assert status == 200

        await b.database.run(lambda conn: key_store.revoke_key(conn, str(key.id), actor="test"))
        with trio.fail_after(WITHIN_A_SECOND):
            for node in (a, b):
                while await status_with_key(node, raw) != 401:
                    await trio.sleep(0.02)
        for node in (a, b):  # the seeded key is untouched
            assert await status_with_key(node, node.key) == 200


async def test_a_pool_routing_change_applies_on_both_nodes(db_url: str, tmp_path: Path) -> None:
    async with open_two_nodes(db_url, tmp_path) as (a, b), b.client() as client:
        pid = await pool_id(a)
        for node in (a, b):
            policy = node.gateway.pool_policy(pid)
            assert (policy.strategy, policy.retry_budget, policy.continuity) == (
                "least_used",
                3,
                True,
            )

        await a.database.run(
            lambda conn: pool_store.update_pool(
                conn,
                POOL,
                strategy="fill_first",
                retry_budget=5,
                continuity_enabled=False,
                actor="test",
            )
        )

        def applied(node: Stack) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                policy = node.gateway.pool_policy(pid)
                return (policy.strategy, policy.retry_budget, policy.continuity) == (
                    "fill_first",
                    5,
                    False,
                )

            return check

        with trio.fail_after(WITHIN_A_SECOND):
            for node in (a, b):
                await within(WITHIN_A_SECOND, f"Pool change on {node.url}", applied(node))

        # And B's router follows it: fill_first keeps new conversations on one account
        # (least_used would have spread these three over the three accounts).
        for i in range(3):
            body = responses_body(prompt_cache_key=f"after-change-{i}")
            assert (await client.post(RESPONSES, json=body)).status_code == 200
        served = Counter(r["account_id"] for r in await b.upstream_requests())
        assert len(served) == 1, served


async def test_an_instance_settings_change_applies_on_both_nodes(
    db_url: str, tmp_path: Path
) -> None:
    async with open_two_nodes(db_url, tmp_path) as (a, b):
        for node in (a, b):
            assert node.gateway.instance_settings.circuit_open_seconds == 60.0
            assert node.gateway.admission.stats()["compact"].concurrency == 8

        changes = {"circuit_open_seconds": 5, "bulkheads.compact.concurrency": 3}
        await b.database.run(
            lambda conn: settings_store.update_instance_settings(conn, changes, actor="test")
        )

        def applied(node: Stack) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                gateway = node.gateway
                return bool(
                    gateway.instance_settings.circuit_open_seconds == 5.0
                    and gateway.pool_supervisor.settings.circuit_open_seconds == 5.0
                    and gateway.admission.stats()["compact"].concurrency == 3
                )

            return check

        with trio.fail_after(WITHIN_A_SECOND):
            for node in (a, b):
                await within(WITHIN_A_SECOND, f"settings change on {node.url}", applied(node))


async def test_quota_evidence_learned_by_one_node_keeps_the_other_off_the_account(
    db_url: str, tmp_path: Path
) -> None:
    # No usage polling during the test: B may only learn from A, through the database.
    quiet = {"usage_poll_interval_seconds": 86_400}
    async with (
        open_two_nodes(db_url, tmp_path, instance_settings=quiet) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        exhausted = "account-1"
        account = a.emulator.find_account(exhausted)
        assert account is not None
        await a.control("POST", "usage", {"account_id": exhausted, "primary_used_percent": 100})
        on_b = b.gateway.pool_supervisor.accounts[(await a.account_ids())[exhausted]]
        assert on_b.snapshot.primary is None  # B knows nothing about it yet

        # Traffic through A until A has met the full account (it fails over: all succeed).
        for i in range(6):
            body = responses_body(prompt_cache_key=f"through-a-{i}")
            assert (await client_a.post(RESPONSES, json=body)).status_code == 200
            if any(r["status"] == 429 for r in await a.upstream_requests()):
                break
        else:
            raise AssertionError("A never routed to the exhausted account")

        async def b_knows() -> bool:
            primary = on_b.snapshot.primary
            return primary is not None and primary.used_percent >= 100

        await within(WRITE_BEHIND_DEADLINE_S, "A's quota evidence on B", b_knows)

        before = len(await b.upstream_requests())
        for i in range(6):
            body = responses_body(prompt_cache_key=f"through-b-{i}")
            assert (await client_b.post(RESPONSES, json=body)).status_code == 200
        sent = (await b.upstream_requests())[before:]
        assert len(sent) == 6 and all(r["status"] == 200 for r in sent)
        assert account.account_id not in {r["account_id"] for r in sent}
        assert not await b.upstream_requests("/usage")  # learned from A, not by polling


async def wait_for_pins(node: Stack, pool: str, digests: list[bytes]) -> None:
    continuity = node.gateway.pool_supervisor.continuity

    async def pinned() -> bool:
        cmap = continuity.get(pool)
        return cmap is not None and all(cmap.get(d, time.time()) for d in digests)

    await within(WRITE_BEHIND_DEADLINE_S, f"pins on {node.url}", pinned)


async def kept_continuity(node: Stack, request_ids: list[str]) -> list[str | None]:
    """The request log's continuity outcome of each request (written by the node)."""
    with trio.fail_after(15):
        while True:
            rows = await node.database.run(
                lambda conn: conn.execute(
                    "SELECT request_id, continuity FROM request_logs WHERE request_id = ANY(%s)",
                    (request_ids,),
                ).fetchall()
            )
            if len(rows) == len(request_ids):
                return [dict(rows)[request_id] for request_id in request_ids]
            await trio.sleep(0.05)


async def test_a_conversation_moving_to_the_other_node_stays_on_its_account(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_two_nodes(db_url, tmp_path) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        conversations: list[tuple[bytes, dict[str, Any], dict[str, str]]] = [
            (
                continuity_digest("prompt_cache_key", f"conv-{i}"),
                {"prompt_cache_key": f"conv-{i}"},
                {},
            )
            for i in range(2)
        ] + [
            (continuity_digest("session", f"thread-{i}"), {}, {"session-id": f"thread-{i}"})
            for i in range(2)
        ]
        first_turns = []
        for _, extra, headers in conversations:
            body = responses_body("turn one", **extra)
            response = await client_a.post(RESPONSES, json=body, headers=headers)
            assert response.status_code == 200
            first_turns.append(await served_by(a))
        assert len(set(first_turns)) >= 2, first_turns  # spread: no follow-up passes by luck

        await wait_for_pins(b, await pool_id(a), [digest for digest, _, _ in conversations])
        request_ids = []
        for (_, extra, headers), account in zip(conversations, first_turns, strict=True):
            body = responses_body("turn two", **extra)
            response = await client_b.post(RESPONSES, json=body, headers=headers)
            assert response.status_code == 200
            assert await served_by(b) == account
            request_ids.append(response.headers["x-request-id"])
        assert await kept_continuity(b, request_ids) == ["kept"] * len(conversations)


async def test_a_previous_response_id_from_one_node_is_served_on_its_account_by_the_other(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_two_nodes(db_url, tmp_path) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        turns: list[tuple[str, str]] = []  # (response id, account label)
        for _ in range(3):
            response = await client_a.post(RESPONSES, json=responses_body("turn one"))
            assert response.status_code == 200
            completed = parse_sse(response.text)[-1]
            assert completed["type"] == "response.completed"
            turns.append((completed["response"]["id"], await served_by(a)))
        assert len({account for _, account in turns}) >= 2, turns

        digests = [continuity_digest("response_id", response_id) for response_id, _ in turns]
        await wait_for_pins(b, await pool_id(a), digests)
        request_ids = []
        for response_id, account in turns:
            body = responses_body("turn two", previous_response_id=response_id)
            response = await client_b.post(RESPONSES, json=body)
            assert response.status_code == 200
            assert await served_by(b) == account
            request_ids.append(response.headers["x-request-id"])
        assert await kept_continuity(b, request_ids) == ["kept"] * len(turns)


async def test_each_token_is_refreshed_once_across_both_nodes(db_url: str, tmp_path: Path) -> None:
    # Tokens live 3 s; each node's actor plans a refresh at 80 % of the same token's life,
    # so both go for it at the same moment, on every account, every lifetime.
    ttl = 3.0
    async with (
        open_two_nodes(db_url, tmp_path, token_ttl=ttl, percent_per_request=0.1) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        statuses = []
        with trio.fail_after(30):
            end = trio.current_time() + 2.5 * ttl
            while trio.current_time() < end:
                for client in (client_a, client_b):
                    statuses.append(
                        (await client.post(RESPONSES, json=responses_body())).status_code
                    )
                await trio.sleep(0.05)
        assert set(statuses) == {200}
        upstream = await a.upstream_requests()
        assert {r["status"] for r in upstream} == {200}, "a node used an expired token"
        assert {r["account_id"] for r in upstream if r["token_fresh"]} == {
            account.account_id for account in a.emulator.accounts
        }

        refreshes = await a.upstream_requests("/oauth/token")
        assert {r["status"] for r in refreshes} == {200}, "a refresh token was used twice"
        by_account: dict[str, list[float]] = {}
        for r in refreshes:
            by_account.setdefault(r["account_id"], []).append(r["time"])
        assert set(by_account) == {account.account_id for account in a.emulator.accounts}
        for times in by_account.values():
            assert len(times) >= 2, "two token lifetimes, two refreshes"
            gaps = [later - earlier for earlier, later in pairwise(times)]
            assert min(gaps) > 1.0, f"refreshed twice in one lifetime: {times}"

        # The race did happen: the two nodes started more refreshes than the upstream saw;
        # the loser of each waited on the account's lock and took the stored token.
        started = sum(
            handle.state.refresh_generation
            for node in (a, b)
            for handle in node.gateway.pool_supervisor.accounts.values()
        )
        assert started > len(refreshes), (started, len(refreshes))


async def test_a_token_refreshed_by_one_node_is_adopted_by_the_other(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        open_two_nodes(db_url, tmp_path) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        body = responses_body(prompt_cache_key="refreshed-here")
        assert (await client_a.post(RESPONSES, json=body)).status_code == 200
        label = await served_by(a)
        account = a.emulator.find_account(label)
        assert account is not None
        await a.fault(label, "unauthorized_401")  # A refreshes on the 401 and retries
        assert (await client_a.post(RESPONSES, json=body)).status_code == 200
        assert len(await a.upstream_requests("/oauth/token")) == 1

        digest = continuity_digest("prompt_cache_key", "refreshed-here")
        await wait_for_pins(b, await pool_id(a), [digest])

        async def b_sends_the_new_token() -> bool:
            assert (await client_b.post(RESPONSES, json=body)).status_code == 200
            last = (await b.upstream_requests())[-1]
            assert last["account_id"] == account.account_id
            return bool(last["token_fresh"])

        await within(WITHIN_A_SECOND, "A's new token on B", b_sends_the_new_token)
        assert len(await b.upstream_requests("/oauth/token")) == 1  # B did not refresh again


async def test_a_new_conversation_reaches_the_other_node_without_waiting_for_the_tick(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the periodic write-behind an hour away, only the prompt write of a new pin can
    # tell node B where node A put the conversation: its next turn may come that soon.
    monkeypatch.setattr(gateway_module, "WRITE_BEHIND_INTERVAL_S", 3600.0)
    async with (
        open_two_nodes(db_url, tmp_path) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        headers = {"session-id": "thread-prompt"}
        first = await client_a.post(RESPONSES, json=responses_body("turn one"), headers=headers)
        assert first.status_code == 200
        account = await served_by(a)
        digest = continuity_digest("session", "thread-prompt")
        await wait_for_pins(b, await pool_id(a), [digest])
        second = await client_b.post(RESPONSES, json=responses_body("turn two"), headers=headers)
        assert second.status_code == 200
        assert await served_by(b) == account
        assert await kept_continuity(b, [second.headers["x-request-id"]]) == ["kept"]
        # Request ids: each node's own random prefix and a counter, never the same twice.
        ids = [r.headers["x-request-id"] for r in (first, second)]
        assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids) and ids[0] != ids[1]
        assert ids[0][:16] != ids[1][:16]  # two nodes, two prefixes
