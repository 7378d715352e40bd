"""Every MCP tool, in the order `tools/list` shows them."""

from __future__ import annotations

from typing import Final

from pooler.mcp import tools_core, tools_inventory, tools_logs
from pooler.mcp.inventory_state import LiveSource
from pooler.mcp.tool import ToolSpec


def tools_for(live: LiveSource | None) -> tuple[ToolSpec, ...]:
    """The tools, with account verdicts from `live` (the gateway's memory) when given."""
    return (*tools_core.TOOLS, *tools_inventory.make_tools(live), *tools_logs.TOOLS)


ALL_TOOLS: Final[tuple[ToolSpec, ...]] = tools_for(None)
