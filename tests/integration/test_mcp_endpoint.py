"""`/mcp` through the MCP Python SDK client (streamable HTTP, the bearer token on its HTTP
client) against the real stack: initialize, the tool list (scoped by role), every core
tool's structured content against its declared output schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import trio
from harness import open_stack
from mcp_support import enable_instance, mcp_session, operator_token

from pooler.mcp import tools_core
from pooler.mcp.registry import ALL_TOOLS


async def test_the_sdk_client_lists_and_calls_the_core_tools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")
        with trio.fail_after(30):
            async with mcp_session(stack, token) as session:
                listed = await session.list_tools()
                names = [tool.name for tool in listed.tools]
                assert names == [spec.name for spec in ALL_TOOLS]
                for tool in listed.tools:
                    assert tool.annotations is not None
                    assert tool.annotations.read_only_hint is True
                    assert tool.annotations.idempotent_hint is True
                    assert tool.output_schema is not None
                schemas = {tool.name: tool.output_schema for tool in listed.tools}
                calls = {"service_status": {}, "list_pools": {}, "get_pool": {"pool": "demo"}}
                assert set(calls) == {spec.name for spec in tools_core.TOOLS}
                results = {}
                for name, arguments in calls.items():
                    result = await session.call_tool(name, arguments)
                    assert not result.is_error, result
                    jsonschema.validate(result.structured_content, schemas[name])
                    assert result.content and result.content[0].type == "text"
                    results[name] = result
        status = results["service_status"].structured_content
        assert status is not None
        assert status["pools"] == 1 and status["accounts"] == 3 and status["active_keys"] == 1
        assert status["caller"] == "o***r@example.com" and status["role"] == "owner"
        [pool] = results["list_pools"].structured_content["pools"]  # type: ignore[index]
        assert pool["name"] == "demo" and pool["accounts"] == 3
        assert pool["usable_accounts"] == 3 and pool["active_keys"] == 1
        assert results["get_pool"].structured_content == pool
        assert "demo" in results["get_pool"].content[0].text  # type: ignore[union-attr]
        everything = repr(results)
        assert token not in everything and stack.key not in everything
