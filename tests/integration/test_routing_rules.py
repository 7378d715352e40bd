"""Routing rules on the real stack (DESIGN §4): per-Pool policy stored in the database and
applied live, and the acceptance scenario where accounts run out one way or another.

Every decision the gateway makes is checked against what the emulator saw: which account
each upstream request reached, with what status. Quota evidence, continuity and admission
have their own files (test_routing_rules_*.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
from harness import open_stack, responses_body
from routing_support import (
    RESPONSES,
    arm,
    attempt_rows,
    completed,
    log_row,
    now,
    post,
    seen,
    seen_labels,
    serve_many,
    set_instance_settings,
    set_usage,
    slow,
    update_pool_live,
)

from pooler.routing.eligibility import QUOTA_CODES

LABELS = {"account-1", "account-2", "account-3"}


# --- 1. per-Pool policy, changed in the database while the gateway runs -----------------------


async def test_strategy_change_applies_live(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await set_usage(stack, "account-2", 50)  # the gateway learns it from its headers

        await update_pool_live(stack, strategy="round_robin")
        await serve_many(client, 6)
        order = await seen_labels(stack)
        # Round robin: each account in turn, whatever its usage (least_used, the default,
        # would have left account-2 alone once its 50 % was known).
        assert Counter(order) == dict.fromkeys(LABELS, 2), order
        assert order[3:] == order[:3], order

        await update_pool_live(stack, strategy="fill_first")
        await serve_many(client, 4)
        assert await seen_labels(stack, since=6) == ["account-2"] * 4  # the most used first

        await update_pool_live(stack, strategy="round_robin")
        await serve_many(client, 3)
        assert set(await seen_labels(stack, since=10)) == LABELS


async def test_concurrency_cap_sends_a_second_request_elsewhere(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await update_pool_live(stack, max_in_flight_per_account=1)
        body = responses_body(prompt_cache_key="capped")
        with trio.fail_after(20):
            async with client.stream(
                "POST", RESPONSES, json={**body, **slow(100)}
            ) as first:  # about 1.2 s of events: in flight while the second one arrives
                assert first.status_code == 200
                second = await post(client, body)
                completed(second)
                await first.aread()
        one, two = await seen(stack)
        assert one["label"] != two["label"], (one, two)
        row = await log_row(stack, second.headers["x-request-id"])
        # The conversation's account was at its cap of 1: the pin moved, and says why.
        assert (row["continuity"], row["account_label"]) == ("moved", two["label"])
        assert str(row["continuity_from"]) == ids[one["label"]]
        assert row["exclusions"] == {one["label"]: "at_capacity"}

        # Without the cap, the same conversation stays on its account while busy.
        await update_pool_live(stack, max_in_flight_per_account=32)
        body = responses_body(prompt_cache_key="uncapped")
        with trio.fail_after(20):
            async with client.stream("POST", RESPONSES, json={**body, **slow(100)}) as first:
                assert first.status_code == 200
                completed(await post(client, body))
                await first.aread()
        three, four = (await seen(stack))[2:]
        assert three["label"] == four["label"]


async def test_retry_budget_bounds_the_attempts(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await update_pool_live(stack, retry_budget=0)
        for label in sorted(LABELS):
            await arm(stack, label, "server_error_500")
        refused = await post(client)
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "upstream_error"
        assert int(refused.headers["retry-after"]) >= 1
        [only] = await seen(stack)  # not retried
        assert only["status"] == 500
        attempts = await attempt_rows(stack, refused.headers["x-request-id"])
        assert [(a["account_label"], a["status_code"]) for a in attempts] == [(only["label"], 500)]

        # Budget 2: three attempts. The two accounts still armed fail first (the failed one
        # is demoted to the back), the third answers.
        await update_pool_live(stack, retry_budget=2)
        answer = await post(client)
        completed(answer)
        tail = (await seen(stack))[1:]
        assert [e["status"] for e in tail] == [500, 500, 200]
        assert tail[-1]["label"] == only["label"]
        row = await log_row(stack, answer.headers["x-request-id"])
        assert (row["retries"], row["status_code"]) == (2, 200)
        attempts = await attempt_rows(stack, answer.headers["x-request-id"])
        assert [a["status_code"] for a in attempts] == [500, 500, 200]


async def test_continuity_switch_per_pool(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await update_pool_live(stack, strategy="round_robin")
        await serve_many(client, 3, prompt_cache_key="one-conversation")
        assert len(set(await seen_labels(stack))) == 1  # sticks, round robin or not

        await update_pool_live(stack, continuity_enabled=False)
        ids = []
        for _ in range(3):
            response = await post(client, responses_body(prompt_cache_key="one-conversation"))
            completed(response)
            ids.append(response.headers["x-request-id"])
        assert set(await seen_labels(stack, since=3)) == LABELS  # spread by round robin
        for request_id in ids:
            row = await log_row(stack, request_id)
            assert row["continuity"] == "disabled"
            assert row["continuity_from"] is None


# --- 3. the acceptance scenario ---------------------------------------------------------------


async def test_accounts_running_out_one_by_one(db_url: str, tmp_path: Path) -> None:
    """One account fails with 500s (its circuit opens), one is rate limited, one runs out of
    quota: clients get 200 while any account can serve, then 503 with Retry-After; once
    every account is out of quota, 429 with resets_at. Refusals log each account's reason."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        # No usage polls: what the gateway knows here comes from the traffic alone.
        await set_instance_settings(
            stack,
            circuit_failure_threshold=2,
            circuit_open_seconds=3,
            demotion_seconds=0,
            usage_poll_interval_seconds=86_400,
        )
        broken, limited, exhausted = "account-3", "account-2", "account-1"

        # A burst of 500s on one account: clients never see them, its circuit opens.
        await arm(stack, broken, "server_error_500", times=100)
        answers = [await post(client) for _ in range(5)]
        for answer in answers:
            completed(answer)
        failures = [e for e in await seen(stack) if e["label"] == broken]
        assert [e["status"] for e in failures] == [500, 500]  # the threshold, then no more
        failed_over = [
            [(a["account_label"], a["status_code"]) for a in await attempt_rows(stack, rid)]
            for rid in (answer.headers["x-request-id"] for answer in answers)
        ]
        assert sum(1 for tried in failed_over if tried[0] == (broken, 500)) == 2
        assert all(len(tried) <= 2 and tried[-1][1] == 200 for tried in failed_over)

        # Another one is rate limited (for 3 s): still 200 from the last account.
        mark = len(await seen(stack))
        await arm(stack, limited, "rate_limit_429", times=100, retry_after_seconds=3)
        await serve_many(client, 3)
        tail = await seen(stack)
        assert [e["status"] for e in tail[mark:] if e["label"] == limited] == [429]
        assert {e["label"] for e in tail[mark:] if e["status"] == 200} == {exhausted}

        # The last one runs out of quota: nothing can serve. The request that finds out
        # and the next one both get 503 (not every account is out of quota).
        mark = len(tail)
        await set_usage(stack, exhausted, 100)
        for expected_upstream in (1, 0):
            refused = await post(client)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "no_eligible_backend"
            assert int(refused.headers["retry-after"]) >= 1
            assert len(await seen(stack)) == mark + expected_upstream
            mark += expected_upstream
        row = await log_row(stack, refused.headers["x-request-id"])
        assert (row["status_code"], row["error_code"]) == (503, "no_eligible_backend")
        assert row["account_id"] is None
        assert row["exclusions"][broken] == "circuit_open"
        assert row["exclusions"][limited] == "rate_limited"
        assert row["exclusions"][exhausted] in QUOTA_CODES
        assert await attempt_rows(stack, refused.headers["x-request-id"]) == []

        # Faults cleared, every account out of quota. Once the circuit and the rate limit
        # run out, the probes learn it too, and clients get 429 with the reset time.
        await stack.control("POST", "reset")
        for label in (broken, limited, exhausted):
            await set_usage(stack, label, 100)
        reset_at = stack.emulator.accounts[0].primary.reset_at(now())
        await trio.sleep(3.2)
        first = await post(client)
        assert first.status_code == 429, first.text
        assert {e["label"] for e in await seen(stack)} == {broken, limited}  # probes
        attempts = await attempt_rows(stack, first.headers["x-request-id"])
        assert {(a["account_label"], a["status_code"]) for a in attempts} == {
            (broken, 429),
            (limited, 429),
        }
        again = await post(client)
        for refused in (first, again):
            error = refused.json()["error"]
            assert error["code"] == "usage_limit_reached"
            assert error["resets_at"] == reset_at
            assert 1 <= int(refused.headers["retry-after"]) <= reset_at - now() + 2
        assert len(await seen(stack)) == 2  # the second one reached no upstream
        row = await log_row(stack, again.headers["x-request-id"])
        assert (row["status_code"], row["error_code"]) == (429, "usage_limit_reached")
        assert set(row["exclusions"]) == LABELS
        assert set(row["exclusions"].values()) <= QUOTA_CODES


async def test_a_401_without_retry_budget_is_refreshed_and_its_leases_go_back(
    db_url: str, tmp_path: Path
) -> None:
    """The retry on the same account after a token refresh is not a new candidate: with a
    budget of 0 it still happens, and both leases are released (tests/unit/test_attempts.py
    has the loop's other endings)."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await update_pool_live(stack, retry_budget=0)
        for label in sorted(LABELS):
            await arm(stack, label, "unauthorized_401")
        answer = await post(client)
        completed(answer)
        tried = await seen(stack)
        assert [e["status"] for e in tried] == [401, 200]
        assert len({e["label"] for e in tried}) == 1
        row = await log_row(stack, answer.headers["x-request-id"])
        assert (row["retries"], row["status_code"]) == (1, 200)
        with trio.fail_after(5):
            accounts = stack.gateway.pool_supervisor.accounts.values()
            while any(handle.snapshot.in_flight for handle in accounts):
                await trio.sleep(0.02)
