"""GET /backend-api/wham/usage (and aliases): the Pool's usage, from memory."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from harness import open_stack, responses_body
from routing_support import post, seen, set_usage

USAGE_PATHS = ("/backend-api/wham/usage", "/wham/usage", "/api/codex/usage")


async def test_usage_aggregates_the_pools_accounts(db_url: str, tmp_path: Path) -> None:
    async with (
        open_stack(db_url, tmp_path, percent_per_request=0.0) as stack,
        stack.client() as client,
    ):
        labels = [account.label for account in stack.emulator.accounts]
        for label, used in zip(labels, (20.0, 40.0, 100.0), strict=True):
            await set_usage(stack, label, used)
        # Unknown accounts look unused, so each request meets an account not seen yet; the
        # exhausted one answers 429 and the request moves on.
        with trio.fail_after(30):
            for i in range(10):
                await post(client, responses_body(prompt_cache_key=f"c{i}"))
                if {entry["label"] for entry in await seen(stack)} == set(labels):
                    break
        assert {entry["label"] for entry in await seen(stack)} == set(labels)

        # The evidence of the last answer reaches its account as the lease is released,
        # just after the client has the answer: give it a moment.
        with trio.fail_after(5):
            while (await client.get(USAGE_PATHS[0])).json()["rate_limit"]["primary_window"][
                "used_percent"
            ] != round((20 + 40 + 100) / 3):
                await trio.sleep(0.05)
        answers = []
        for path in USAGE_PATHS:
            response = await client.get(path)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        payload = answers[0]
        assert all(a["rate_limit"] == payload["rate_limit"] for a in answers)
        limits = payload["rate_limit"]
        assert (limits["allowed"], limits["limit_reached"]) == (True, False)
        primary = limits["primary_window"]
        assert primary["used_percent"] == round((20 + 40 + 100) / 3)
        assert primary["limit_window_seconds"] == 18_000
        assert primary["reset_at"] > time.time()
        assert 0 < primary["reset_after_seconds"] <= 18_000
        secondary = limits["secondary_window"]
        assert secondary["limit_window_seconds"] == 604_800
        assert payload["plan_type"] == stack.emulator.accounts[0].plan_type
        assert set(payload) == {"plan_type", "rate_limit", "credits", "additional_rate_limits"}
        # From memory: the gateway asked the upstream usage endpoint nothing.
        assert await stack.upstream_requests("/usage") == []


async def test_usage_limit_reached_when_every_account_is_out(db_url: str, tmp_path: Path) -> None:
    async with (
        open_stack(db_url, tmp_path, accounts=2, percent_per_request=0.0) as stack,
        stack.client() as client,
    ):
        for account in stack.emulator.accounts:
            await set_usage(stack, account.label, 100.0)
        with trio.fail_after(20):
            response = await post(client)
        assert response.status_code == 429
        payload = (await client.get("/backend-api/wham/usage")).json()
        limits = payload["rate_limit"]
        assert (limits["allowed"], limits["limit_reached"]) == (False, True)
        assert limits["primary_window"]["used_percent"] == 100
        assert limits["primary_window"]["reset_at"] > time.time()


async def test_usage_needs_the_pool_key(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        missing = await client.get("/wham/usage", headers={"Authorization": ""})
        wrong = await client.get("/wham/usage", headers={"Authorization": "Bearer nope"})
        assert missing.status_code == 401 and wrong.status_code == 401
        assert wrong.json()["error"]["type"]
        fresh = (await client.get("/wham/usage")).json()
        assert fresh["rate_limit"]["primary_window"]["used_percent"] == 0
        assert fresh["rate_limit"]["allowed"] is True
