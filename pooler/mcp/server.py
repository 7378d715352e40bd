"""The MCP server proper: the official SDK's low-level `Server` with two handlers,
`tools/list` and `tools/call`, over `pooler.mcp.registry.ALL_TOOLS`.

The low-level server (not the decorator API) because the tool list depends on the caller:
an admin's token sees no owner-only tool, and calling one is answered as an unknown tool.
The caller was authenticated by the endpoint (`pooler.mcp.endpoint`) and rides in the
request's ASGI scope (`CALLER_KEY`), which the SDK hands each handler as `ctx.request`.

A tool runs in one transaction in a worker thread (`gateway.db.run`); its output is the
result's structured content plus `summary(output)` as text. A `ToolRefusal` is a result
with `isError`; an unknown tool or arguments its input model refuses are the JSON-RPC
error -32602 (invalid params), naming the fields but never echoing their values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from pooler.admin_ui.upstream_view import AccountRow, Live, live_state
from pooler.mcp.registry import ALL_TOOLS, tools_for
from pooler.mcp.tool import McpCaller, ToolRefusal, ToolSpec
from pooler.mcp.wire import INVALID_PARAMS

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.mcp")

CALLER_KEY: Final = "pooler.mcp_caller"
INTERNAL_ERROR: Final = -32603
INSTRUCTIONS: Final = (
    "Read-only, metadata-only tools about this Codex Pooler instance: its Pools, upstream"
    " accounts, keys, operators, invites, request logs and audit events. No tool changes"
    " anything or returns a secret or any content."
)


@cache
def tool_of(spec: ToolSpec) -> types.Tool:
    """The tool as `tools/list` shows it (built once per server: its schemas cost ~ms)."""
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.input_model.model_json_schema(),
        output_schema=spec.output_model.model_json_schema(mode="serialization"),
        annotations=types.ToolAnnotations(
            title=spec.title,
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )


@cache
def package_version() -> str:
    try:
        return metadata.version("codex-pooler")
    except metadata.PackageNotFoundError:
        return "unknown"


def visible_tools(caller: McpCaller, tools: tuple[ToolSpec, ...] = ALL_TOOLS) -> list[ToolSpec]:
    return [spec for spec in tools if caller.is_owner or not spec.owner_only]


def find_tool(caller: McpCaller, name: str, tools: tuple[ToolSpec, ...] = ALL_TOOLS) -> ToolSpec:
    for spec in visible_tools(caller, tools):
        if spec.name == name:
            return spec
    raise MCPError(INVALID_PARAMS, f"Unknown tool: {name[:100]}")


def checked_arguments(spec: ToolSpec, arguments: Mapping[str, Any] | None) -> Any:
    """The tool's input model from the call's arguments, or -32602 naming what is wrong."""
    if arguments is not None and has_nul(arguments):
        raise MCPError(INVALID_PARAMS, f"Invalid arguments for {spec.name}: NUL in a string")
    try:
        return spec.input_model.model_validate(dict(arguments or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(arguments)'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise MCPError(INVALID_PARAMS, f"Invalid arguments for {spec.name}: {problems}") from None


def has_nul(value: Any) -> bool:
    """Whether a NUL is in any string of `value` (keys included): the database refuses
    them, so they are refused at the door."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def caller_in(ctx: ServerRequestContext[Any, Any]) -> McpCaller:
    request = ctx.request
    caller = request.scope.get(CALLER_KEY) if request is not None else None
    if not isinstance(caller, McpCaller):  # the endpoint always sets it: never reached
        raise MCPError(INTERNAL_ERROR, "no authenticated caller")
    return caller


def build_server(gateway: Gateway) -> Server[Any]:
    """The low-level MCP server of this gateway. Account verdicts come from the gateway's
    memory (the console's `live_state`, asked from the tool's worker thread), so a tool
    says what the console says."""
    loop: list[trio.lowlevel.TrioToken] = []  # the gateway's trio loop, known at the first call

    def live(accounts: Sequence[AccountRow]) -> Mapping[UUID, Live]:
        return trio.from_thread.run(live_state, gateway, list(accounts), trio_token=loop[0])

    tools = tools_for(live)
    listed = {spec.name: tool_of(spec) for spec in tools}  # JSON schemas made once

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[listed[s.name] for s in visible_tools(caller_in(ctx), tools)]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = caller_in(ctx)
        spec = find_tool(caller, params.name, tools)
        if not loop:
            loop.append(trio.lowlevel.current_trio_token())
        args = checked_arguments(spec, params.arguments)
        try:
            output = await gateway.db.run(lambda conn: spec.run(conn, caller, args))
            if spec.enrich is not None:
                output = await spec.enrich(gateway, caller, output)
        except ToolRefusal as refusal:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=refusal.message)], is_error=True
            )
        except Exception as exc:
            log.warning("MCP tool %s failed: %s", spec.name, type(exc).__name__)
            raise MCPError(INTERNAL_ERROR, f"{spec.name} failed; see the gateway's log") from None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=spec.summary(output))],
            structured_content=output.model_dump(mode="json"),
        )

    return Server(
        "codex-pooler",
        version=package_version(),
        title="Codex Pooler",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
