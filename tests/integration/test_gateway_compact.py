"""POST /backend-api/codex/responses/compact end to end, and compaction turns on /responses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from harness import open_stack, responses_body
from routing_support import arm, completed, log_row, post, seen

COMPACT = "/backend-api/codex/responses/compact"


def compact_body(cache_key: str) -> dict[str, Any]:
    body = responses_body("Summarize what we did", prompt_cache_key=cache_key)
    body.pop("stream", None)
    return body


async def test_compact_lands_on_the_conversations_account(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for i in range(3):  # conversations spread over the accounts
            completed(await post(client, responses_body(prompt_cache_key=f"other-{i}")))
        completed(await post(client, responses_body(prompt_cache_key="the-conversation")))
        turn_account = (await seen(stack))[-1]["label"]
        with trio.fail_after(20):
            response = await client.post(COMPACT, json=compact_body("the-conversation"))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        payload = response.json()
        assert [item["type"] for item in payload["output"]] == ["compaction"]
        compacts = await seen(stack, "/responses/compact")
        assert [c["label"] for c in compacts] == [turn_account]
        row = await log_row(stack, response.headers["x-request-id"])
        assert (row["route"], row["status_code"], row["outcome"]) == ("compact", 200, "completed")
        assert row["account_label"] == turn_account
        assert row["input_tokens"] > 0


async def test_compact_session_header_and_v1_path(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for i in range(3):
            completed(await post(client, responses_body(prompt_cache_key=f"other-{i}")))
        completed(await post(client, responses_body(), **{"session-id": "sess-1"}))
        turn_account = (await seen(stack))[-1]["label"]
        body = responses_body("compact me")
        with trio.fail_after(20):
            response = await client.post(
                "/backend-api/codex/v1/responses/compact",
                json=body,
                headers={"session-id": "sess-1"},
            )
        assert response.status_code == 200, response.text
        assert [c["label"] for c in await seen(stack, "/responses/compact")] == [turn_account]


async def test_compact_failure_is_relayed_without_failover(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        completed(await post(client, responses_body(prompt_cache_key="failing")))
        account = (await seen(stack))[-1]["label"]
        await arm(stack, account, "server_error_500")
        with trio.fail_after(20):
            response = await client.post(COMPACT, json=compact_body("failing"))
        assert response.status_code == 500, response.text
        assert "error" in response.json()
        compacts = await seen(stack, "/responses/compact")
        assert [(c["label"], c["status"]) for c in compacts] == [(account, 500)]
        row = await log_row(stack, response.headers["x-request-id"])
        assert (row["route"], row["status_code"], row["retries"]) == ("compact", 500, 0)


async def test_compact_rejects_bad_key_and_bad_json(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            bad_key = await client.post(
                COMPACT, json=compact_body("x"), headers={"Authorization": "Bearer nope"}
            )
            bad_json = await client.post(
                COMPACT, content=b"{not json", headers={"content-type": "application/json"}
            )
            no_model = await client.post(COMPACT, json={"input": []})
        assert bad_key.status_code == 401
        assert bad_key.json()["error"]["type"]
        assert bad_json.status_code == 400
        assert set(bad_json.json()["error"]) >= {"message", "type", "code", "param"}
        assert no_model.status_code == 400
        assert no_model.json()["error"]["param"] == "model"
        assert await seen(stack, "/responses/compact") == []


async def test_compaction_trigger_turn_is_logged_as_compact(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body("earlier history")
        body["input"].append({"type": "compaction_trigger"})
        response = await post(client, body)
        event = completed(response)
        types = [item["type"] for item in event["response"]["output"]]
        assert "compaction" in types
        row = await log_row(stack, response.headers["x-request-id"])
        assert (row["route"], row["outcome"]) == ("compact", "completed")


async def test_compact_401_refreshes_and_asks_the_same_account(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        completed(await post(client, responses_body(prompt_cache_key="expired")))
        account = (await seen(stack))[-1]["label"]
        await arm(stack, account, "unauthorized_401")
        with trio.fail_after(20):
            response = await client.post(COMPACT, json=compact_body("expired"))
        assert response.status_code == 200, response.text
        compacts = await seen(stack, "/responses/compact")
        assert [(c["label"], c["status"]) for c in compacts] == [(account, 401), (account, 200)]
        row = await log_row(stack, response.headers["x-request-id"])
        assert (row["route"], row["status_code"], row["retries"]) == ("compact", 200, 1)


async def test_compact_lands_on_its_own_circuit(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        completed(await post(client, responses_body(prompt_cache_key="breaker")))
        account = (await seen(stack))[-1]["label"]
        await arm(stack, account, "server_error_500", times=3)
        for _ in range(3):
            with trio.fail_after(20):
                failed = await client.post(COMPACT, json=compact_body("breaker"))
            assert failed.status_code == 500
        account_id = (await stack.account_ids())[account]
        handle = stack.gateway.pool_supervisor.accounts[account_id]
        # The answer can reach the client before the account's actor has handled the
        # attempt's release (which opens the circuit): wait for it, bounded.
        with trio.fail_after(5):
            while getattr(handle.state.circuits.get("compact"), "state", None) != "open":
                await trio.sleep(0.01)
        assert "responses" not in handle.state.circuits or (
            handle.state.circuits["responses"].state == "closed"
        )
        # /responses still reaches that account: only its compact circuit is open.
        completed(await post(client, responses_body(prompt_cache_key="breaker")))
        assert (await seen(stack))[-1]["label"] == account
