"""The Responses relay needs the server to say when a client leaves (pooler.client_gone):
a server that gives no such report (here: the gateway's ASGI app called directly, as any
other ASGI server would) gets a clear OpenAI-shaped 500 and a loud log line, and nothing
reaches the upstream; through the gateway's own server the extension is there."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import Stack, open_stack, responses_body

from pooler.web.app import create_app

CODEX = "/backend-api/codex/responses"


def bare_scope(stack: Stack, body: bytes) -> dict[str, Any]:
    """An HTTP scope as an ASGI server other than pooler.serving gives it: no extensions."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CODEX,
        "raw_path": CODEX.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"pooler"),
            (b"authorization", f"Bearer {stack.key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4000),
        "extensions": {},
    }


async def test_a_server_without_the_client_gone_report_is_refused_loudly(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        app: Any = create_app(stack.gateway)  # the gateway's app, without its server
        body = json.dumps(responses_body()).encode()
        sent: list[dict[str, Any]] = []
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()
            raise AssertionError  # unreachable

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        with trio.fail_after(20), caplog.at_level(logging.ERROR, "pooler.web.responses"):
            await app(bare_scope(stack, body), receive, send)
            assert await stack.upstream_requests() == []
            # The honest path still works: the real server gives the extension.
            async with stack.client() as client:
                honest = await client.post(CODEX, json=responses_body())
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 500
        answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert answer["error"]["code"] == "server_misconfigured"
        assert set(answer["error"]) >= {"message", "type", "code", "param"}
        assert any("pooler.client_gone" in r.getMessage() for r in caplog.records)
        assert honest.status_code == 200 and '"response.completed"' in honest.text
