"""The real Codex CLI (npm @openai/codex 0.169.0) through the gateway against the emulator.

HTTP provider (supports_websockets = false), the Pool key in env_key. One turn where the
model asks for a tool: Codex runs it locally and sends the output back in a second request.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import open_stack, require_tool, run_client

PROMPT = "Please run `echo pooler-e2e-tool-output` and tell me what it printed"


def codex_command(codex: str, base_url: str, last_message: Path) -> list[str]:
    provider = (
        'model_providers.pooler={name="OpenAI",'
        f'base_url="{base_url}/backend-api/codex",'
        'env_key="CODEX_POOLER_API_KEY",wire_api="responses",supports_websockets=false,'
        "requires_openai_auth=true,request_max_retries=0,stream_max_retries=0}"
    )
    return [
        codex,
        "exec",
        "--skip-git-repo-check",
        "--ephemeral",
        "--dangerously-bypass-approvals-and-sandbox",
        "--color",
        "never",
        "-m",
        "gpt-5.5",
        "-c",
        "model_provider=pooler",
        "-c",
        provider,
        "-c",
        "features.plugins=false",
        "-c",
        "analytics.enabled=false",
        "-c",
        "check_for_update_on_startup=false",
        "-o",
        str(last_message),
        PROMPT,
    ]


async def test_codex_exec_runs_a_tool_through_the_gateway(db_url: str, tmp_path: Path) -> None:
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    last_message = tmp_path / "last.txt"
    async with open_stack(db_url, tmp_path / "gw") as stack:
        env = {**os.environ, "CODEX_HOME": str(home), "CODEX_POOLER_API_KEY": stack.key}
        code, _, stderr = await run_client(
            codex_command(codex, stack.url, last_message), env, 120, work
        )
        assert code == 0, stderr[-3000:]
        answer = last_message.read_text()
        # The emulator echoes the tool's output: Codex really ran the command.
        assert "pooler-e2e-tool-output" in answer
        assert answer.startswith("Tool output:")
        upstream = await stack.upstream_requests()
        assert [r["status"] for r in upstream] == [200, 200]  # the call, then its follow-up
        assert len({r["account_id"] for r in upstream}) == 1  # one conversation, one account
        rows = await stack.wait_for_logs(2)
        assert rows == 2
