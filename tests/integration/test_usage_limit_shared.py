"""A usage-limit 429 that carries no quota headers (only its body's reset time) is quota
evidence like any other: the node that met it stores it, and the other nodes keep off the
account until that time (DESIGN §11). It used to block the account on that node only, so
each other node met a 429 of its own before failing over."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from harness import open_two_nodes, responses_body

from pooler.routing.eligibility import quota_block

RESPONSES = "/backend-api/codex/responses"
WRITE_BEHIND_DEADLINE_S = 2.0  # evidence is written behind every 0.5 s, then NOTIFY
RESETS_IN_S = 600


async def test_a_headerless_usage_limit_met_by_one_node_keeps_the_other_off_the_account(
    db_url: str, tmp_path: Path
) -> None:
    quiet = {"usage_poll_interval_seconds": 86_400}  # B may learn only from A
    async with (
        open_two_nodes(db_url, tmp_path, instance_settings=quiet) as (a, b),
        a.client() as client_a,
        b.client() as client_b,
    ):
        exhausted = "account-1"
        account = a.emulator.find_account(exhausted)
        assert account is not None
        await a.control("POST", "accounts", {"account_id": exhausted, "quiet_headers": True})
        fault = {"kind": "usage_limit_429", "times": 100, "resets_in_seconds": RESETS_IN_S}
        await a.control("POST", "faults", {"account_id": exhausted, **fault})
        on_b = b.gateway.pool_supervisor.accounts[(await a.account_ids())[exhausted]]

        # Traffic through A until A has met the limit (it fails over: all succeed).
        for i in range(6):
            body = responses_body(prompt_cache_key=f"through-a-{i}")
            assert (await client_a.post(RESPONSES, json=body)).status_code == 200
            refused = [r for r in await a.upstream_requests() if r["status"] == 429]
            if refused:
                break
        else:
            raise AssertionError("A never routed to the exhausted account")
        met_at = time.time()

        with trio.move_on_after(WRITE_BEHIND_DEADLINE_S):
            while quota_block(on_b.snapshot, 100.0, time.time()) is None:
                await trio.sleep(0.02)
        block = quota_block(on_b.snapshot, 100.0, time.time())
        assert block is not None, "B did not learn A's usage limit"
        until = block[1]
        assert until is not None and abs(until - (met_at + RESETS_IN_S)) < 5, block

        before = len(await b.upstream_requests())
        for i in range(6):
            body = responses_body(prompt_cache_key=f"through-b-{i}")
            assert (await client_b.post(RESPONSES, json=body)).status_code == 200
        sent = (await b.upstream_requests())[before:]
        assert len(sent) == 6 and all(r["status"] == 200 for r in sent), sent
        assert account.account_id not in {r["account_id"] for r in sent}
