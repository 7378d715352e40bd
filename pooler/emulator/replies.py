"""What the emulator answers, decided from the last input item of a request. Pure.

In order:
  (a) a user message asking to "run `cmd`" while a shell-like function tool is offered
      → a function call to that tool; or saying "Call NAME with {json}" while a function
      tool NAME is offered → a call to NAME with those arguments. NAME may be qualified,
      `NS__TOOL`, for a function TOOL inside a `namespace` tool NS (how the Codex CLI
      offers an MCP server's tools: `mcp__<server>` / `list_pools`) → a call carrying
      `namespace`. When NAME is not offered but a client-side `tool_search` tool is (the
      Codex CLI defers MCP tools behind it) → a `tool_search_call` for NAME's words;
  (b) a `tool_search_output` item → the call asked for by the last user message, if the
      tools it loaded hold NAME (else "Tool not found: NAME");
      a `function_call_output` item → "Tool output: <first 200 chars>";
  (c) "Reply with exactly: X" in the user's text → X;
  (d) a `compaction_trigger` item → one `compaction` item;
  (e) an `image_generation` tool with `tool_choice: {"type": "image_generation"}`
      → one `image_generation_call` item (a PNG drawn from the prompt);
  (f) anything else → a fixed greeting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_TEXT = "Hello from the Codex emulator."
SHELL_TOOLS = ("exec_command", "shell", "shell_command", "local_shell")

_RUN = re.compile(r"\brun\b[^`]*`([^`]+)`", re.IGNORECASE)
_CALL = re.compile(r"\bCall[ \t]+([A-Za-z0-9_.-]+)[ \t]+with[ \t]+(\{[^\r\n]*\})")
_EXACT = re.compile(r"Reply with exactly:[ \t]*([^\r\n]*)")


@dataclass(frozen=True)
class TextReply:
    text: str


@dataclass(frozen=True)
class ToolCallReply:
    name: str
    arguments: str
    namespace: str | None = None


@dataclass(frozen=True)
class ToolSearchReply:
    """A client-executed `tool_search_call` looking for `query`."""

    query: str


@dataclass(frozen=True)
class CompactionReply:
    pass


@dataclass(frozen=True)
class ImageReply:
    prompt: str
    size: str = "1024x1024"


Reply = TextReply | ToolCallReply | ToolSearchReply | CompactionReply | ImageReply


def decide_reply(body: dict[str, Any]) -> Reply:
    last = _last_item(body.get("input"))
    kind = last.get("type")
    if kind == "compaction_trigger":
        return CompactionReply()
    if kind == "function_call_output":
        return TextReply("Tool output: " + output_text(last.get("output"))[:200])
    if kind == "tool_search_output":
        return _after_tool_search(body.get("input"), last.get("tools"))
    if kind not in (None, "message") or last.get("role", "user") != "user":
        return TextReply(DEFAULT_TEXT)
    text = message_text(last.get("content"))
    image_tool = _image_tool(body)
    if image_tool is not None:
        size = image_tool.get("size")
        return ImageReply(text, size if isinstance(size, str) and size != "auto" else "1024x1024")
    named = _CALL.search(text)
    if named:
        call = _named_call(named.group(1), named.group(2), body.get("tools"))
        if call is not None:
            return call
        if _client_tool_search(body.get("tools")):
            return ToolSearchReply(search_words(named.group(1)))
    run = _RUN.search(text)
    if run:
        call = tool_call_for(run.group(1).strip(), body.get("tools"))
        if call is not None:
            return call
    exact = _EXACT.search(text)
    if exact:
        return TextReply(exact.group(1).strip())
    return TextReply(DEFAULT_TEXT)


def _image_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The `image_generation` tool, when the request forces it."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "image_generation":
        return None
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            return tool
    return None


# Items that set the turn's context rather than continue the conversation: newer Codex
# CLIs (gpt-6.x presets) end their input with a `configuration_update`.
CONTEXT_ITEMS = frozenset({"configuration_update", "additional_tools"})


def _last_item(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": "message", "role": "user", "content": value}
    if not isinstance(value, list):
        return {}
    for item in reversed(value):
        if not isinstance(item, dict):
            return {}
        if item.get("type") not in CONTEXT_ITEMS:
            return item
    return {}


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or parts carrying `text`."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def output_text(output: Any) -> str:
    """A `function_call_output.output`: a string or a list of `input_text` parts."""
    return message_text(output)


def _function_tools(tools: Any) -> dict[str, dict[str, Any]]:
    """Function tools by name; accepts Responses (flat) and Chat (nested) shapes."""
    found: dict[str, dict[str, Any]] = {}
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        nested = tool.get("function")
        spec: dict[str, Any] = nested if isinstance(nested, dict) else tool
        if isinstance(spec.get("name"), str):
            found[spec["name"]] = spec
    return found


def _named_call(name: str, arguments: str, tools: Any) -> ToolCallReply | None:
    """A call to the offered tool `name`: a function tool, or `NS__TOOL` for a function
    TOOL inside the namespace tool NS."""
    if name in _function_tools(tools):
        return ToolCallReply(name, arguments)
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or tool.get("type") != "namespace":
            continue
        namespace = tool.get("name")
        if not isinstance(namespace, str) or not name.startswith(namespace + "__"):
            continue
        if name[len(namespace) + 2 :] in _function_tools(tool.get("tools")):
            return ToolCallReply(name[len(namespace) + 2 :], arguments, namespace)
    return None


def search_words(name: str) -> str:
    """What to search for to find the tool `name`: its last part, as words
    (`mcp__codex_pooler__list_pools` → "list pools")."""
    return name.rsplit("__", 1)[-1].replace("_", " ")


def _client_tool_search(tools: Any) -> bool:
    return any(
        isinstance(tool, dict)
        and tool.get("type") == "tool_search"
        and tool.get("execution") == "client"
        for tool in (tools if isinstance(tools, list) else [])
    )


def _after_tool_search(items: Any, loaded: Any) -> Reply:
    """The call the last user message asked for, among the tools a search loaded."""
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("type", "message") == "message":
            if item.get("role") != "user":
                continue
            named = _CALL.search(message_text(item.get("content")))
            if named is None:
                break
            call = _named_call(named.group(1), named.group(2), loaded)
            return call if call is not None else TextReply(f"Tool not found: {named.group(1)}")
    return TextReply(DEFAULT_TEXT)


def tool_call_for(command: str, tools: Any) -> ToolCallReply | None:
    """A call running `command` through the first shell-like function tool offered."""
    offered = _function_tools(tools)
    for name in SHELL_TOOLS:
        if name in offered:
            args = shell_arguments(command, offered[name], default_array=name != "exec_command")
            return ToolCallReply(name, json.dumps(args, separators=(",", ":")))
    return None


def shell_arguments(command: str, spec: dict[str, Any], *, default_array: bool) -> dict[str, Any]:
    """Arguments shaped by the tool's JSON schema: `cmd` string, or `command` string/array."""
    params = spec.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    props = props if isinstance(props, dict) else {}
    argv = ["bash", "-lc", command]
    if "cmd" in props:
        return {"cmd": command}
    if "command" in props:
        schema = props["command"] if isinstance(props["command"], dict) else {}
        return {"command": argv if schema.get("type") == "array" else command}
    return {"command": argv} if default_array else {"cmd": command}
