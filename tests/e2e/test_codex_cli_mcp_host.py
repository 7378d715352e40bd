"""The real Codex CLI (npm @openai/codex 0.169.0) as an MCP host of the gateway's `/mcp`,
its model turns going through the same gateway to the emulator.

`config.toml` in a throwaway CODEX_HOME declares the server as a user would:
`[mcp_servers.codex_pooler]` with `url` (streamable HTTP; no extra feature flag in 0.169.0)
and `bearer_token_env_var`. Codex defers MCP tools behind its client-side `tool_search`
tool, so one `codex exec` turn is three upstream requests: the emulator searches ("list
pools"), then calls `list_pools` in the `mcp__codex_pooler` namespace the search loaded,
Codex calls `/mcp` (tools/call), and the tool's output goes up as a `function_call_output`
that the emulator echoes ("Tool output: ...").

The emulator keeps no bodies, so a spy around its reply function (the real one still
answers) keeps them for the assertions: what reached upstream, and that the MCP token never
did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import Stack, open_stack, require_tool, run_client
from mcp_support import enable_instance, operator_token
from test_codex_cli import codex_command

import pooler.emulator.inbound as inbound
from pooler.emulator.replies import decide_reply
from pooler.store import pools

pytestmark = pytest.mark.e2e

PROMPT = "Call mcp__codex_pooler__list_pools with {}"


def write_config(home: Path, gateway_url: str) -> None:
    home.mkdir()
    (home / "config.toml").write_text(
        "[mcp_servers.codex_pooler]\n"
        f'url = "{gateway_url}/mcp"\n'
        'bearer_token_env_var = "POOLER_MCP_TOKEN"\n'
        "startup_timeout_sec = 10\n"
    )


def spy_on_upstream(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The `/responses` bodies the emulator answers, in order."""
    bodies: list[dict[str, Any]] = []

    def recording(body: dict[str, Any]) -> Any:
        bodies.append(body)
        return decide_reply(body)

    monkeypatch.setattr(inbound, "decide_reply", recording)
    return bodies


async def run_codex(
    stack: Stack, tmp_path: Path, token: str, *, events: bool = True, rust_log: str = ""
) -> tuple[int, str, str, str]:
    """`codex exec PROMPT` with the MCP server configured: exit code, the last agent
    message, stdout (JSONL events with `events`) and stderr (its log at `rust_log`)."""
    codex = require_tool("codex", "npm install (package.json pins @openai/codex 0.169.0)")
    home, work, last = tmp_path / "codex-home", tmp_path / "work", tmp_path / "last.txt"
    write_config(home, stack.url)
    work.mkdir()
    argv = codex_command(codex, stack.url, last)
    argv[-1:] = ["--json", PROMPT] if events else [PROMPT]
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "CODEX_POOLER_API_KEY": stack.key,
        "POOLER_MCP_TOKEN": token,
        "RUST_LOG": rust_log,
    }
    code, out, err = await run_client(argv, env, 60, work)
    answer = last.read_text() if last.exists() else ""
    return code, answer, out, err


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def mcp_items(stdout: str) -> list[dict[str, Any]]:
    return [
        event["item"]
        for event in events_of(stdout)
        if event.get("type") == "item.completed" and event["item"].get("type") == "mcp_tool_call"
    ]


async def test_codex_calls_an_mcp_tool_of_the_gateway(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = spy_on_upstream(monkeypatch)
    async with open_stack(db_url, tmp_path / "gw") as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")
        pool_id = str(await stack.database.run(lambda conn: pools.get_pool(conn, "demo").id))
        code, answer, out, err = await run_codex(stack, tmp_path, token)
        assert code == 0, err[-3000:]

        # Codex ran the tool through /mcp: the result is the gateway's own Pool.
        [item] = mcp_items(out)
        assert (item["server"], item["tool"], item["status"]) == (
            "codex_pooler",
            "list_pools",
            "completed",
        ), item
        # The search, the call, then the answer built from the tool's output.
        upstream = await stack.upstream_requests()
        assert [r["status"] for r in upstream] == [200, 200, 200]
        assert len(bodies) == 3
        assert bodies[1]["input"][-1]["type"] == "tool_search_output"
        loaded = [t["name"] for t in bodies[1]["input"][-1]["tools"]]
        assert loaded == ["mcp__codex_pooler"]
        call, output = bodies[2]["input"][-2:]
        assert (call["type"], call["namespace"], call["name"]) == (
            "function_call",
            "mcp__codex_pooler",
            "list_pools",
        )
        assert output["type"] == "function_call_output"
        assert output["call_id"] == call["call_id"]
        assert pool_id in output["output"] and '"name":"demo"' in output["output"]
        assert answer.startswith("Tool output:") and pool_id in answer

        # The MCP token went to /mcp only: never upstream, never in Codex's output.
        assert token not in json.dumps(bodies)
        assert token not in json.dumps(upstream)
        assert token not in out + err + answer


async def test_with_the_instance_gate_off_codex_runs_without_the_tools(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = spy_on_upstream(monkeypatch)
    async with open_stack(db_url, tmp_path / "gw") as stack:
        await enable_instance(stack, False)
        token = await operator_token(stack, "owner@example.com")
        code, answer, out, err = await run_codex(stack, tmp_path, token, rust_log="codex_mcp=warn")
        # What Codex 0.169.0 does: the server fails to start (`initialize` is refused with
        # the gate's JSON-RPC error), which it logs only as a warning (hence RUST_LOG);
        # the turn goes on without the server's tools, so the one the model looks for is
        # not found, and the run still succeeds.
        assert code == 0, err[-3000:]
        assert 'MCP server startup failed server_name="codex_pooler"' in err, err[-3000:]
        assert "MCP is turned off for this instance" in err
        assert mcp_items(out) == []
        assert answer == "Tool not found: mcp__codex_pooler__list_pools"
        assert all(t.get("type") != "namespace" for body in bodies for t in body.get("tools", []))
        assert token not in json.dumps(bodies) + out + err
