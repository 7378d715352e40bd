"""A key's model list and reasoning-effort policy hold on every surface: the Codex route
(HTTP and websocket) and `/v1` (Responses, Chat Completions, models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket
from harness import POOL, Stack, open_stack, responses_body
from test_websocket_responses import ws_url

from pooler.store.keys import EffortPolicy, create_key

BACKEND = "/backend-api/codex/responses"
CHAT = "/v1/chat/completions"


async def new_key(stack: Stack, models: list[str] | None, effort: EffortPolicy | None) -> str:
    secret = stack.config.secret_key
    raw, _ = await stack.database.run(
        lambda conn: create_key(
            conn, secret, POOL, "policy", allowed_models=models, effort=effort, actor="test"
        )
    )
    await stack.gateway.reload()
    return str(raw)


def client(stack: Stack, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_keys_model_list_and_effort_ceiling_hold_on_both_surfaces(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        key = await new_key(stack, ["gpt-5.4"], EffortPolicy("max", "low"))
        async with client(stack, key) as http:
            refused = [
                (await http.post(BACKEND, json=responses_body(model="gpt-5.5")), 403, "model"),
                (await http.post(CHAT, json=chat("gpt-5.5")), 403, "model"),
                (
                    await http.post(
                        BACKEND, json=responses_body(model="gpt-5.4", reasoning={"effort": "high"})
                    ),
                    400,
                    "reasoning.effort",
                ),
                (
                    await http.post(CHAT, json=chat("gpt-5.4", reasoning_effort="high")),
                    400,
                    "reasoning_effort",
                ),
                (
                    await http.post(
                        "/v1/responses",
                        json={"model": "gpt-5.4", "input": "hi", "reasoning": {"effort": "xhigh"}},
                    ),
                    400,
                    "reasoning.effort",
                ),
            ]
            for response, status, param in refused:
                assert response.status_code == status, response.text
                assert response.json()["error"]["param"] == param
            codes = {r.json()["error"]["code"] for r, _, _ in refused}
            assert codes == {"model_not_allowed", "reasoning_effort_not_allowed"}
            assert not await stack.upstream_requests()  # nothing refused went upstream
            allowed = await http.post(CHAT, json=chat("gpt-5.4", reasoning_effort="minimal"))
            assert allowed.status_code == 200, allowed.text
            listed = (await http.get("/v1/models")).json()["data"]
            assert [m["id"] for m in listed] == ["gpt-5.4"]


async def test_an_enforced_effort_reaches_the_upstream(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        key = await new_key(stack, None, EffortPolicy("enforce", "high"))
        async with client(stack, key) as http:
            # The emulator reasons (and bills reasoning tokens) only when an effort is set.
            body = chat("gpt-5.5", reasoning_effort="none")
            answer = await http.post(CHAT, json=body)
            assert answer.status_code == 200, answer.text
            usage = answer.json()["usage"]
            assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
        async with stack.client() as plain:
            answer = await plain.post(CHAT, json=body)
            usage = answer.json()["usage"]
            assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_a_websocket_turn_outside_the_keys_models_is_refused_in_band(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        key = await new_key(stack, ["gpt-5.4"], None)
        headers = [(b"authorization", f"Bearer {key}".encode())]
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=headers
            ) as ws:
                create = {"type": "response.create", **responses_body(model="gpt-5.5")}
                await ws.send_message(json.dumps(create))
                refusal = json.loads(await ws.get_message())
                assert refusal["type"] == "error" and refusal["status"] == 403
                assert refusal["error"]["code"] == "model_not_allowed"
                # The socket stays usable for a turn the key allows.
                await ws.send_message(json.dumps({**create, "model": "gpt-5.4"}))
                while (event := json.loads(await ws.get_message()))["type"] != "response.completed":
                    assert event["type"] != "error"
            await stack.wait_for_logs(2)
        turns = [r for r in await stack.upstream_requests() if r["method"] != "GET"]
        assert len(turns) == 1  # the refused turn never went upstream
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT status_code, error_code FROM request_logs WHERE transport = 'websocket'"
                " AND status_code = 403"
            ).fetchall()
        )
        assert [tuple(r) for r in rows] == [(403, "model_not_allowed")]
        del ws
