"""The real Codex CLI over the gateway's websocket Responses (supports_websockets = true).

The same tool turn as tests/e2e/test_codex_cli.py, but the CLI talks websocket to the
gateway and the gateway websocket to the emulator; with the upstream refusing upgrades
(`ws_upgrade_426`) the gateway answers 426 and the CLI falls back to HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import Stack, open_stack, require_tool, run_client
from test_codex_cli import codex_command


async def run_codex(stack: Stack, codex: str, tmp_path: Path) -> tuple[int, str, str]:
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    last_message = tmp_path / "last.txt"
    command = [
        arg.replace("supports_websockets=false", "supports_websockets=true")
        for arg in codex_command(codex, stack.url, last_message)
    ]
    env = {**os.environ, "CODEX_HOME": str(home), "CODEX_POOLER_API_KEY": stack.key}
    code, _, stderr = await run_client(command, env, 120, work)
    answer = last_message.read_text() if last_message.exists() else ""
    return code, stderr, answer


def methods(upstream: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["method"], r["transport"]) for r in upstream]


async def test_codex_exec_runs_a_tool_over_the_gateway_websocket(
    db_url: str, tmp_path: Path
) -> None:
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    async with open_stack(db_url, tmp_path / "gw") as stack:
        returncode, stderr, answer = await run_codex(stack, codex, tmp_path)
        assert returncode == 0, stderr[-3000:]
        assert "pooler-e2e-tool-output" in answer
        assert answer.startswith("Tool output:")
        upstream = await stack.upstream_requests()
        assert upstream and {r["transport"] for r in upstream} == {"websocket"}
        assert not [r for r in upstream if r["method"] == "POST"]
        turns = [r for r in upstream if r["method"] == "response.create"]
        assert len(turns) >= 2  # the tool call, then its follow-up (after a prewarm)
        assert len({r["account_id"] for r in upstream}) == 1
        assert await stack.wait_for_logs(len(turns)) >= len(turns)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT client_request_id, request_bytes, response_bytes, routing, account_label"
                " FROM request_logs WHERE transport = 'websocket' AND status_code = 200"
            ).fetchall()
        )
        # Each turn's row has what the detail page shows: the CLI's own request id (its
        # thread id, sent on the handshake), the frames' bytes each way, the routing story.
        assert len(rows) >= 2
        assert len({row[0] for row in rows}) == 1 and rows[0][0]
        for _, sent, answered, routing, label in rows:
            assert sent > 0 and answered > 0
            assert {"label": label, "verdict": "chosen"} in routing["candidates"]


async def test_codex_falls_back_to_http_when_the_upstream_refuses_websockets(
    db_url: str, tmp_path: Path
) -> None:
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    async with open_stack(db_url, tmp_path / "gw") as stack:
        for account in stack.emulator.accounts:
            await stack.fault(str(account.label), "ws_upgrade_426", times=10)
        returncode, stderr, answer = await run_codex(stack, codex, tmp_path)
        assert returncode == 0, stderr[-3000:]
        assert "pooler-e2e-tool-output" in answer
        upstream = await stack.upstream_requests()
        posts = [r for r in upstream if r["method"] == "POST"]
        assert [r["status"] for r in posts] == [200, 200]  # the call, then its follow-up
        assert all(r["status"] == 426 for r in upstream if r["transport"] == "websocket")
