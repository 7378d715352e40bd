"""Bad input gets a clear OpenAI-shaped JSON error and status, never a traceback or a hang."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import zstandard
from harness import open_stack, parse_sse, responses_body

from pooler.db import notify
from pooler.store import CONFIG_CHANNEL
from pooler.web.settings import GatewaySettings


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error and "param" in error
    assert "Traceback" not in response.text


async def test_bad_requests_get_clear_errors(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = GatewaySettings(max_body_bytes=64 * 1024)
    async with open_stack(db_url, tmp_path, settings=settings) as stack:
        url = "/backend-api/codex/responses"
        async with stack.client() as client, httpx.AsyncClient(base_url=stack.url) as anon:
            with trio.fail_after(30):
                assert_openai_error(
                    await client.post(
                        url, content=b"{not json", headers={"content-type": "application/json"}
                    ),
                    400,
                    "invalid_json",
                )
                assert_openai_error(
                    await client.post(
                        url, content=b"[1,2]", headers={"content-type": "application/json"}
                    ),
                    400,
                    "invalid_json",
                )
                assert_openai_error(
                    await client.post(
                        url, content=b"hello", headers={"content-type": "text/plain"}
                    ),
                    415,
                    "unsupported_media_type",
                )
                assert_openai_error(
                    await anon.post(url, json=responses_body()), 401, "api_key_missing"
                )
                assert_openai_error(
                    await anon.post(
                        url, json=responses_body(), headers={"authorization": "Bearer sk-cxp-nope"}
                    ),
                    401,
                    "api_key_invalid",
                )
                assert_openai_error(
                    await anon.post(
                        url, json=responses_body(), headers={"authorization": "Basic abc"}
                    ),
                    401,
                    "api_key_missing",
                )
                big = responses_body("x" * (100 * 1024))
                assert_openai_error(await client.post(url, json=big), 413, "request_too_large")
                missing_model = responses_body()
                missing_model.pop("model")
                error = await client.post(url, json=missing_model)
                assert_openai_error(error, 400, "invalid_request")
                assert error.json()["error"]["param"] == "model"
                assert_openai_error(
                    await client.get("/backend-api/codex/nope"), 404, "unsupported_endpoint"
                )
                assert_openai_error(await client.get("/v1/whatever"), 404, "unsupported_endpoint")
                assert_openai_error(await client.get(url), 405, "method_not_allowed")
                assert_openai_error(
                    await client.post(
                        url,
                        content=b"\x28\xb5\x2f\xfd garbage",
                        headers={"content-type": "application/json", "content-encoding": "zstd"},
                    ),
                    400,
                    "invalid_body",
                )
                assert_openai_error(
                    await client.post(
                        url,
                        content=b"{}",
                        headers={"content-type": "application/json", "content-encoding": "br"},
                    ),
                    400,
                    "unsupported_content_encoding",
                )
                # A zstd body (what the Codex CLI sends with ChatGPT auth) is accepted.
                import json

                compressed = zstandard.ZstdCompressor().compress(
                    json.dumps(responses_body("Reply with exactly: zstd ok")).encode()
                )
                ok = await client.post(
                    url,
                    content=compressed,
                    headers={"content-type": "application/json", "content-encoding": "zstd"},
                )
                assert ok.status_code == 200
                deltas = [e.get("delta", "") for e in parse_sse(ok.text)]
                assert "".join(deltas) == "zstd ok"
                # Only the valid request reached an upstream account.
                assert len(await stack.upstream_requests()) == 1
                # A disabled Pool keeps its keys out.
                await stack.database.run(
                    lambda conn: (
                        conn.execute("UPDATE pools SET status = 'disabled'")
                        and notify(conn, CONFIG_CHANNEL, "test")
                    )
                )
                for _ in range(100):  # the NOTIFY-driven reload takes a moment
                    disabled = await client.post(url, json=responses_body())
                    if disabled.status_code != 200:
                        break
                    await trio.sleep(0.05)
                assert_openai_error(disabled, 403, "pool_disabled")
        # Nothing was stored about the rejected requests but metadata, and nothing crashed.
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
