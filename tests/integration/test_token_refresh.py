"""Account tokens: refreshed ahead of expiry and on a 401, and a spent refresh token takes
the account out of routing (reauth_required)."""

from __future__ import annotations

from pathlib import Path

import trio
from harness import open_stack, parse_sse, responses_body


async def test_token_expiring_while_running_is_refreshed_without_a_failed_request(
    db_url: str, tmp_path: Path
) -> None:
    # Tokens live 3 s; the gateway refreshes at 80 % of their life, before they expire.
    async with open_stack(db_url, tmp_path, token_ttl=3.0) as stack, stack.client() as client:
        initial = {a.label: a.access_token for a in stack.emulator.accounts}
        statuses = []
        with trio.fail_after(30):
            end = trio.current_time() + 7.0
            i = 0
            while trio.current_time() < end:
                body = responses_body(prompt_cache_key=f"c{i % 3}")
                response = await client.post("/backend-api/codex/responses", json=body)
                statuses.append(response.status_code)
                assert parse_sse(response.text)[-1]["type"] == "response.completed"
                i += 1
                await trio.sleep(0.1)
        assert set(statuses) == {200}
        upstream = await stack.upstream_requests()
        assert all(r["status"] == 200 for r in upstream), "no upstream request saw a stale token"
        assert any(r["token_fresh"] for r in upstream), "requests used refreshed tokens"
        refreshes = await stack.upstream_requests("/oauth/token")
        assert refreshes and all(r["status"] == 200 for r in refreshes)
        assert {a.label: a.access_token for a in stack.emulator.accounts} != initial
        # The rotated refresh tokens were stored (encrypted) for the next start.
        stored = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM upstream_accounts WHERE last_refresh_at IS NOT NULL"
            ).fetchone()[0]
        )
        assert stored >= 1


async def test_upstream_401_is_refreshed_and_retried_on_the_same_account(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body(prompt_cache_key="keep")
        assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        label = stack.label_of((await stack.upstream_requests())[-1]["account_id"])
        await stack.fault(label, "unauthorized_401")
        response = await client.post("/backend-api/codex/responses", json=body)
        assert response.status_code == 200
        tail = (await stack.upstream_requests())[-2:]
        assert [r["status"] for r in tail] == [401, 200]
        assert {stack.label_of(r["account_id"]) for r in tail} == {label}
        assert tail[1]["token_fresh"] is True
        assert len(await stack.upstream_requests("/oauth/token")) == 1


async def test_reused_refresh_token_moves_the_account_to_reauth_required(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body(prompt_cache_key="doomed")
        assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        label = stack.label_of((await stack.upstream_requests())[-1]["account_id"])
        await stack.fault(label, "refresh_token_reused")
        await stack.fault(label, "unauthorized_401")

        response = await client.post("/backend-api/codex/responses", json=body)
        assert response.status_code == 200  # answered by another account
        ids = await stack.account_ids()
        with trio.fail_after(10):
            while True:
                lifecycle = await stack.database.run(
                    lambda conn: conn.execute(
                        "SELECT lifecycle, lifecycle_reason FROM upstream_accounts WHERE id = %s",
                        (ids[label],),
                    ).fetchone()
                )
                if lifecycle[0] == "reauth_required":
                    break
                await trio.sleep(0.05)
        assert lifecycle == ("reauth_required", "refresh_token_reused")

        await stack.control("POST", "reset")
        for i in range(6):
            body = responses_body(prompt_cache_key=f"later-{i}")
            assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        served = {stack.label_of(r["account_id"]) for r in await stack.upstream_requests()}
        assert label not in served and len(served) == 2
