"""POST /backend-api/codex/responses end to end: emulator, real PostgreSQL, real gateway."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
from harness import open_stack, parse_sse, responses_body


async def test_stream_is_relayed_and_logged(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            response = await client.post(
                "/backend-api/codex/responses", json=responses_body("Reply with exactly: relayed")
            )
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-codex-primary-used-percent"] is not None
        events = parse_sse(response.text)
        types = [e["type"] for e in events]
        assert types[0] == "response.created" and types[-1] == "response.completed"
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "relayed"
        await stack.wait_for_logs(1)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT request_id, status_code, outcome, account_label, input_tokens,"
                " output_tokens, ttfb_ms, transport FROM request_logs"
            ).fetchall()
        )
        assert len(rows) == 1
        request_id, status, outcome, label, input_tokens, output_tokens, ttfb, transport = rows[0]
        assert request_id == response.headers["x-request-id"]
        assert (status, outcome, transport) == (200, "completed", "http_sse")
        assert label.startswith("account-")
        assert input_tokens > 0 and output_tokens > 0 and ttfb is not None
        attempts = await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM request_attempts").fetchone()
        )
        assert attempts == (1,)


async def test_non_streaming_client_gets_the_collected_response(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body("Reply with exactly: collected")
        body.pop("stream")
        with trio.fail_after(20):
            response = await client.post("/backend-api/codex/responses", json=body)
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["status"] == "completed"
        texts = [
            part["text"]
            for item in payload["output"]
            if item["type"] == "message"
            for part in item["content"]
        ]
        assert texts == ["collected"]
        assert payload["usage"]["total_tokens"] > 0
        # The upstream itself was always asked for a stream.
        assert all(r["status"] == 200 for r in await stack.upstream_requests())


async def test_prompt_cache_keys_spread_and_stick(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for i in range(6):
            body = responses_body(prompt_cache_key=f"conversation-{i}")
            assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        spread = Counter(r["account_id"] for r in await stack.upstream_requests())
        assert len(spread) == 3, spread  # six conversations over three accounts

        await stack.control("POST", "reset")
        for _ in range(5):
            body = responses_body(prompt_cache_key="one-conversation")
            assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        stuck = Counter(r["account_id"] for r in await stack.upstream_requests())
        assert len(stuck) == 1 and sum(stuck.values()) == 5, stuck

        await stack.control("POST", "reset")
        for _ in range(3):
            response = await client.post(
                "/backend-api/codex/responses",
                json=responses_body(),
                headers={"session-id": "codex-thread-1"},
            )
            assert response.status_code == 200
        by_session = Counter(r["account_id"] for r in await stack.upstream_requests())
        assert len(by_session) == 1, by_session


async def test_usage_limited_account_is_skipped(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body(prompt_cache_key="pinned")
        assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        pinned = stack.label_of((await stack.upstream_requests())[-1]["account_id"])
        await stack.fault(pinned, "usage_limit_429", times=1)

        response = await client.post("/backend-api/codex/responses", json=body)
        assert response.status_code == 200
        assert parse_sse(response.text)[-1]["type"] == "response.completed"
        tail = (await stack.upstream_requests())[-2:]
        assert [r["status"] for r in tail] == [429, 200]
        assert stack.label_of(tail[0]["account_id"]) == pinned
        assert stack.label_of(tail[1]["account_id"]) != pinned

        # The limited account stays out of routing until its window resets.
        await stack.control("POST", "reset")
        for i in range(4):
            body = responses_body(prompt_cache_key=f"after-{i}")
            assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        labels = {stack.label_of(r["account_id"]) for r in await stack.upstream_requests()}
        assert pinned not in labels


async def test_every_account_exhausted_gives_429_with_reset(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for account in stack.emulator.accounts:
            await stack.control(
                "POST", "usage", {"account_id": account.label, "primary_used_percent": 100}
            )
        response = await client.post("/backend-api/codex/responses", json=responses_body())
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "usage_limit_reached"
        assert error["resets_at"] > 0
        assert int(response.headers["retry-after"]) >= 1
        tried = len(await stack.upstream_requests())
        assert tried == 3

        # Now the gateway knows: the next request is refused without touching the upstream.
        again = await client.post("/backend-api/codex/responses", json=responses_body())
        assert again.status_code == 429
        assert again.json()["error"]["resets_at"] == error["resets_at"]
        assert "retry-after" in again.headers
        assert len(await stack.upstream_requests()) == tried


async def test_conversation_pins_are_written_behind_and_restored(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        body = responses_body(prompt_cache_key="survives-a-restart")
        assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        first = (await stack.upstream_requests())[-1]["account_id"]
        await stack.gateway.flush_continuity()
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT key_digest, account_id FROM continuity_pins"
            ).fetchall()
        )
        # The prompt_cache_key and the response id (for a previous_response_id later).
        assert len(rows) == 2
        assert all(b"survives-a-restart" not in bytes(row[0]) for row in rows)  # digests only

        # Forget everything in memory, as a restart would, then read the pins back.
        stack.gateway.pool_supervisor.continuity.clear()
        await stack.gateway.restore_continuity()
        for _ in range(3):
            assert (await client.post("/backend-api/codex/responses", json=body)).status_code == 200
        served = {r["account_id"] for r in (await stack.upstream_requests())[-3:]}
        assert served == {first}
