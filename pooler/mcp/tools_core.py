"""MCP tools (see `pooler.mcp.tool`): filled by issue 15's work."""

from __future__ import annotations

from pooler.mcp.tool import ToolSpec

TOOLS: list[ToolSpec] = []
