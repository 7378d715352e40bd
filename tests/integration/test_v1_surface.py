"""The `/v1` surface through the real gateway: exact errors for what it does not serve,
parameters named in its 400s, routing and accounting like the backend route, errors in
the client's protocol before and after output, and nothing a client sent is stored."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from harness import open_stack, parse_sse
from test_privacy import dump_database

UNSUPPORTED = {
    "error": {
        "message": "Unsupported OpenAI /v1 endpoint",
        "type": "invalid_request_error",
        "code": "unsupported_endpoint",
        "param": None,
    }
}
CHAT = "/v1/chat/completions"
MODELS = "/backend-api/codex/models"


def chat_body(text: str = "Reply with exactly: ok", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/responses/compact"),
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/moderations"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/realtime/sessions"),
        ("GET", "/v1/realtime"),
        ("POST", "/v1/completions"),
        ("DELETE", "/v1/models/gpt-5.5"),
    ],
)
async def test_unsupported_endpoints_answer_one_exact_404_after_authentication(
    db_url: str, tmp_path: Path, method: str, path: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        response = await client.request(method, path, json={"model": "gpt-5.5"})
        assert response.status_code == 404
        assert response.json() == UNSUPPORTED
        async with httpx.AsyncClient(base_url=stack.url) as anonymous:
            refused = await anonymous.request(method, path, json={})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_missing"
        forwarded = [r for r in await stack.upstream_requests("") if r["path"] != MODELS]
        assert not forwarded  # only the catalog's own fetches reached the upstream


async def test_bad_requests_name_the_field(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        cases = [
            (CHAT, chat_body(n=2), "unsupported_parameter", "n"),
            (CHAT, chat_body(audio={"voice": "alloy"}), "unsupported_parameter", "audio"),
            (CHAT, {"model": "gpt-5.5"}, None, "messages"),
            (CHAT, {"messages": []}, None, "model"),
            ("/v1/responses", {"model": "gpt-5.5", "input": "hi", "conversation": "c"}, None, None),
            ("/v1/images/generations", {"prompt": "a cat", "n": 2}, "unsupported_parameter", "n"),
            ("/v1/images/edits", {"prompt": "a cat"}, None, "image"),
        ]
        for path, body, code, param in cases:
            response = await client.post(path, json=body)
            assert response.status_code == 400, (body, response.text)
            error = response.json()["error"]
            if code is not None:
                assert error["code"] == code
            assert error["param"] == (param if param is not None else "conversation")
            assert "Traceback" not in response.text
        broken = await client.post(
            CHAT,
            content=b'{"model": "gpt-5.5", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
        assert not await stack.upstream_requests()


async def test_v1_traffic_is_routed_accounted_and_logged_like_the_backend(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            for _ in range(3):  # one conversation: it keeps its account
                response = await client.post(CHAT, json=chat_body(prompt_cache_key="conv-1"))
                assert response.status_code == 200, response.text
            streamed = await client.post(
                "/v1/responses",
                json={"model": "gpt-5.5", "input": "Reply with exactly: s", "stream": True},
            )
            assert parse_sse(streamed.text)[-1]["type"] == "response.completed"
            await stack.wait_for_logs(4)
        upstream = await stack.upstream_requests()
        assert len({r["account_id"] for r in upstream[:3]}) == 1
        assert all(r["status"] == 200 for r in upstream)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT route, transport, status_code, outcome, input_tokens, output_tokens,"
                " account_id FROM request_logs ORDER BY created_at"
            ).fetchall()
        )
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            ("v1_chat", "http_json", 200, "completed")
        ] * 3 + [("v1_responses", "http_sse", 200, "completed")]
        assert all(r[4] and r[5] and r[6] for r in rows)


async def test_upstream_failures_reach_the_client_in_its_protocol(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        labels = [str(a.label) for a in stack.emulator.accounts]
        with trio.fail_after(30):
            # Before any output, on every account: one OpenAI error JSON, no stream.
            for label in labels:
                await stack.fault(label, "server_error_500", times=5)
            failed = await client.post(CHAT, json=chat_body(stream=True))
            assert failed.status_code == 502
            assert failed.json()["error"]["type"] == "server_error"
            await stack.control("POST", "reset")
            # After output: the chat stream ends with an error the SDK raises on.
            for label in labels:
                await stack.fault(label, "disconnect_mid_stream", times=5)
            sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key, max_retries=0)

            def read_stream() -> list[str]:
                parts = []
                for chunk in sdk.chat.completions.create(**chat_body(stream=True)):
                    parts.append(chunk.choices[0].delta.content or "")
                return parts

            with pytest.raises(openai.APIError):
                await trio.to_thread.run_sync(read_stream)
            broken = await client.post(
                "/v1/responses", json={"model": "gpt-5.5", "input": "hi", "stream": True}
            )
            assert parse_sse(broken.text)[-1]["type"] == "response.failed"


async def test_nothing_a_v1_client_sent_is_stored_or_logged(
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"v1-marker-{uuid.uuid4().hex}"
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            body = chat_body(
                f"Reply with exactly: {marker}-text",
                prompt_cache_key=f"{marker}-cache",
                user=f"{marker}-user",
                metadata={"note": f"{marker}-meta"},
            )
            body["messages"].insert(0, {"role": "system", "content": f"{marker}-system"})
            response = await client.post(CHAT, json=body)
            assert marker in response.text
            streamed = await client.post(CHAT, json={**body, "stream": True})
            assert streamed.text.endswith("data: [DONE]\n\n")
            response = await client.post(
                "/v1/responses",
                json={"model": "gpt-5.5", "input": f"{marker}-input", "instructions": marker},
            )
            assert response.status_code == 200
            bad = await client.post(CHAT, json={**body, "n": 3})
            assert bad.status_code == 400
            await stack.wait_for_logs(4)
    stored = await trio.to_thread.run_sync(dump_database, db_url)
    for table, text in stored.items():
        assert marker not in text, f"the marker is stored in {table}"
    captured = capfd.readouterr()
    assert marker not in "\n".join([caplog.text, captured.out, captured.err])
