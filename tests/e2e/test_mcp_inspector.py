"""The MCP Inspector CLI (npm `@modelcontextprotocol/inspector` 2.12.0, pinned in
package.json; its `--header` option carries the bearer token) lists `/mcp`'s tools and
calls one, as an operator's tooling would (clients.md §4.2: it runs on Node 20 despite
its engines field)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness import open_stack, require_tool, run_client
from mcp_support import enable_instance, operator_token

from pooler.mcp.registry import ALL_TOOLS


async def test_the_inspector_cli_lists_the_tools_and_calls_one(db_url: str, tmp_path: Path) -> None:
    inspector = require_tool("mcp-inspector", "npm install (package.json pins the Inspector)")
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")
        env = {**os.environ, "HOME": str(tmp_path)}  # it writes ~/.mcp-inspector/
        base = [inspector, "--cli", f"{stack.url}/mcp", "--transport", "http"]
        base += ["--header", f"Authorization: Bearer {token}"]
        code, out, err = await run_client([*base, "--method", "tools/list"], env, 120)
        assert code == 0, err[-2000:]
        names = [tool["name"] for tool in json.loads(out)["tools"]]
        assert names == [spec.name for spec in ALL_TOOLS]

        called = [*base, "--method", "tools/call", "--tool-name", "get_pool"]
        code, out, err = await run_client([*called, "--tool-arg", "pool=demo"], env, 120)
        assert code == 0, err[-2000:]
        result = json.loads(out)
        assert result["structuredContent"]["name"] == "demo", result

        # Without the header the Inspector is refused (and says so).
        code, _, _ = await run_client([*base[:-2], "--method", "tools/list"], env, 120)
        assert code != 0
