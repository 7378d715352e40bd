"""Every MCP tool, in the order `tools/list` shows them."""

from __future__ import annotations

from typing import Final

from pooler.mcp import tools_core, tools_inventory, tools_logs
from pooler.mcp.tool import ToolSpec

ALL_TOOLS: Final[tuple[ToolSpec, ...]] = (
    *tools_core.TOOLS,
    *tools_inventory.TOOLS,
    *tools_logs.TOOLS,
)
