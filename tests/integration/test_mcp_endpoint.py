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
                for spec in tools_core.TOOLS:
                    result = await session.call_tool(spec.name, {})
                    assert not result.is_error, result
                    jsonschema.validate(result.structured_content, schemas[spec.name])
                    assert result.content and result.content[0].type == "text"
