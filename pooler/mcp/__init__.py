"""The operator MCP endpoint (`/mcp`, issue 15): read-only, metadata-only tools about the
Pools, served in the gateway's process with the official MCP Python SDK.

- `tool.py`: what a tool is (`ToolSpec`: strict input and output models, owner-only or
  not, a function of a database connection and the caller) and who calls it
  (`McpCaller`, scoped like a console operator).
- `tools_*.py`: the tools, each module a `TOOLS` list; `registry.py` gathers them.
- The server, its transport, the two gates and the token check live beside them.
"""
