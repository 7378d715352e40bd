"""The operator MCP endpoint (`/mcp`, issue 15): read-only, metadata-only tools about the
Pools, served in the gateway's process with the official MCP Python SDK.

- `tool.py`: what a tool is (`ToolSpec`: strict input and output models, owner-only or
  not, a function of a database connection and the caller) and who calls it
  (`McpCaller`, scoped like a console operator).
- `tools_*.py`: the tools, each module a `TOOLS` list; `registry.py` gathers them.
- `endpoint.py`: `/mcp` as raw ASGI in the gateway's app (stateless Streamable HTTP, JSON
  answers): the head's checks (`wire.py`), the gates and the token (`gates.py`), the `mcp`
  bulkhead, the bounded body; then the SDK's transport and `server.py`, the low-level MCP
  server listing and calling the tools the caller may see.
"""
