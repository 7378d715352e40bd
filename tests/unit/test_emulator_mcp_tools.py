"""The emulator's replies to MCP tools as the Codex CLI offers them: inside a `namespace`
tool (`mcp__<server>`), or deferred behind a client-side `tool_search` tool, whose
output then loads the namespace (items shaped as Codex 0.169.0 sends them)."""

from typing import Any

from pooler.emulator.events import Turn, build_events
from pooler.emulator.replies import (
    DEFAULT_TEXT,
    TextReply,
    ToolCallReply,
    ToolSearchReply,
    decide_reply,
)

TURN = Turn(response_id="resp_abc", model="gpt-5.5", created_at=1, input_tokens=100)
ASK = "Call mcp__codex_pooler__list_pools with {}"
SEARCH = {"type": "tool_search", "execution": "client", "parameters": {"type": "object"}}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def namespace(*names: str) -> dict[str, Any]:
    tools = [{"type": "function", "name": name, "parameters": {}} for name in names]
    return {"type": "namespace", "name": "mcp__codex_pooler", "tools": tools}


def test_a_qualified_name_calls_the_tool_in_its_namespace() -> None:
    body = {"input": [user(ASK)], "tools": [namespace("get_pool", "list_pools")]}
    assert decide_reply(body) == ToolCallReply("list_pools", "{}", "mcp__codex_pooler")
    # Not in the namespace, and nothing to search with: no call.
    body = {"input": [user(ASK)], "tools": [namespace("get_pool")]}
    assert decide_reply(body) == TextReply(DEFAULT_TEXT)


def test_a_deferred_tool_is_searched_for_then_called() -> None:
    first = {"input": [user(ASK)], "tools": [SEARCH]}
    assert decide_reply(first) == ToolSearchReply("list pools")
    call = {"type": "tool_search_call", "call_id": "call_1", "execution": "client"}
    output = {
        "type": "tool_search_output",
        "call_id": "call_1",
        "execution": "client",
        "tools": [namespace("list_pool_keys", "list_pools")],
    }
    second = {"input": [user(ASK), call, output], "tools": [SEARCH]}
    assert decide_reply(second) == ToolCallReply("list_pools", "{}", "mcp__codex_pooler")
    empty = {**output, "tools": []}
    third = {"input": [user(ASK), call, empty], "tools": [SEARCH]}
    assert decide_reply(third) == TextReply("Tool not found: mcp__codex_pooler__list_pools")


def test_the_search_and_the_namespaced_call_as_events() -> None:
    events = build_events(ToolSearchReply("list pools"), TURN)
    item = events[-2]["item"]
    assert item["type"] == "tool_search_call" and item["execution"] == "client"
    assert item["arguments"] == {"query": "list pools", "limit": 8}
    assert item["call_id"].startswith("call_")
    assert events[-1]["response"]["output"] == [item]
    events = build_events(ToolCallReply("list_pools", "{}", "mcp__codex_pooler"), TURN)
    item = events[-2]["item"]
    assert (item["type"], item["name"], item["namespace"]) == (
        "function_call",
        "list_pools",
        "mcp__codex_pooler",
    )
    plain = build_events(ToolCallReply("exec_command", "{}"), TURN)[-2]["item"]
    assert "namespace" not in plain
