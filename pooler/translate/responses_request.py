"""POST /v1/responses body → the Codex `/responses` body (`normalize_responses_request`). Pure.

Fields, as in `chat_request`:

    forwarded   model input instructions tools tool_choice parallel_tool_calls reasoning
                include text prompt_cache_key service_tier client_metadata
                previous_response_id
    local       stream (the upstream always streams), store (always false upstream)
    DROPPED     max_output_tokens temperature top_p metadata user safety_identifier
                prompt_cache_retention stream_options, truncation="disabled",
                background=false: the ChatGPT backend rejects them
    anything else (conversation, prompt, background=true, truncation="auto",
                context_management, max_tool_calls, top_logprobs>0, ...) → 400
                `unsupported_parameter` naming the field

`input` is normalized to the item list Codex sends: a string becomes one user message;
message items get `type: "message"` and part-list content. The backend refuses
`role: "system"` items, so leading system messages are appended to `instructions` and
later ones become `developer` messages in place. Remote MCP tools are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pooler.translate.common import (
    NormalizedRequest,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_object,
    check_string,
    check_string_map,
    invalid,
    present,
    reject_unknown,
    service_tier,
    unsupported,
)

__all__ = ["DROPPED", "FORWARDED", "normalize_responses_request"]

FORWARDED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "include",
        "text",
        "prompt_cache_key",
        "service_tier",
        "client_metadata",
        "previous_response_id",
    }
)
_LOCAL = frozenset({"stream", "store"})

DROPPED: dict[str, Callable[[Any, str], object]] = {
    "max_output_tokens": lambda v, p: check_int(v, p, 1),
    "temperature": lambda v, p: check_number(v, p, 0, 2),
    "top_p": lambda v, p: check_number(v, p, 0, 1),
    "metadata": check_string_map,
    "user": check_string,
    "safety_identifier": check_string,
    "prompt_cache_retention": check_string,
    "stream_options": check_object,
    # Accepted only at these values (`_NEUTRAL_DROPPED`), so nothing is left to check.
    "truncation": lambda v, p: v,
    "background": lambda v, p: v,
}
NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "top_logprobs": lambda v: v == 0 and not isinstance(v, bool),
}
_NEUTRAL_DROPPED: dict[str, Callable[[Any], bool]] = {
    "truncation": lambda v: v == "disabled",
    "background": lambda v: v is False,
}
_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PART = {"user": "input_text", "system": "input_text", "developer": "input_text"}
_ACCEPTED = FORWARDED | _LOCAL | (frozenset(DROPPED) - frozenset(_NEUTRAL_DROPPED))


def normalize_responses_request(body: dict[str, Any]) -> NormalizedRequest:
    """Validate a public Responses request and build the upstream body.

    Raises `UnsupportedParameter` or `BadRequest` (400), `param` naming the field.
    """
    reject_unknown(body, _ACCEPTED, {**NEUTRAL, **_NEUTRAL_DROPPED})
    model = check_string(body.get("model"), "model")
    dropped = tuple(key for key in DROPPED if present(body, key))
    for key in dropped:
        DROPPED[key](body[key], key)
    client_stream = check_bool(body["stream"], "stream") if present(body, "stream") else False
    if present(body, "store"):
        check_bool(body["store"], "store")
    lifted, items = _input(body.get("input"))
    upstream: dict[str, Any] = {"model": model}
    instructions = _instructions(body.get("instructions"), lifted)
    if instructions is not None:
        upstream["instructions"] = instructions
    upstream["input"] = items
    upstream |= _forwarded(body)
    upstream |= {"store": False, "stream": True}
    return NormalizedRequest(
        body=upstream,
        model=model,
        client_stream=client_stream,
        include_usage=True,
        dropped=dropped,
    )


def _forwarded(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if present(body, "tools"):
        out["tools"] = _tools(body["tools"])
    if present(body, "tool_choice"):
        choice = body["tool_choice"]
        if isinstance(choice, str):
            check_choice(choice, "tool_choice", ("auto", "none", "required"))
        else:
            check_object(choice, "tool_choice")
        out["tool_choice"] = choice
    if present(body, "parallel_tool_calls"):
        out["parallel_tool_calls"] = check_bool(body["parallel_tool_calls"], "parallel_tool_calls")
    for key in ("reasoning", "text"):
        if present(body, key):
            out[key] = check_object(body[key], key)
    if present(body, "include"):
        out["include"] = _strings(body["include"], "include")
    for key in ("prompt_cache_key", "previous_response_id"):
        if present(body, key):
            out[key] = check_string(body[key], key)
    if present(body, "client_metadata"):
        out["client_metadata"] = check_string_map(body["client_metadata"], "client_metadata")
    if present(body, "service_tier"):
        tier = service_tier(body["service_tier"])
        if tier is not None:
            out["service_tier"] = tier
    return out


def _strings(value: Any, param: str) -> list[str]:
    if not isinstance(value, list):
        raise invalid(param, f"'{param}' must be an array of strings.")
    return [check_string(item, f"{param}[{index}]") for index, item in enumerate(value)]


def _instructions(value: Any, lifted: list[str]) -> str | None:
    texts = [] if value is None else [check_string(value, "instructions", allow_empty=True)]
    texts = [text for text in texts + lifted if text]
    return "\n\n".join(texts) if texts else None


def _tools(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise invalid("tools", "'tools' must be an array.")
    for index, raw in enumerate(value):
        tool = check_object(raw, f"tools[{index}]")
        if tool.get("type") == "mcp":
            raise unsupported(f"tools[{index}].type", "Remote MCP tools are not supported.")
        check_string(tool.get("type"), f"tools[{index}].type")
    return value


def _input(value: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts lifted into instructions, normalized input items)."""
    if isinstance(value, str):
        return [], [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise invalid("input", "'input' must be a string or an array of items.")
    lifted: list[str] = []
    items: list[dict[str, Any]] = []
    for index, raw in enumerate(value):
        item = check_object(raw, f"input[{index}]")
        if item.get("type", "message") != "message":
            items.append(item)  # function calls, outputs, reasoning, compaction: as they are
            continue
        role = check_choice(item.get("role"), f"input[{index}].role", _ROLES)
        content = _content(item.get("content"), role, f"input[{index}].content")
        if role == "system" and not items:
            lifted.append(_joined_text(content))
            continue
        items.append({**item, "type": "message", "role": _upstream_role(role), "content": content})
    return lifted, items


def _upstream_role(role: str) -> str:
    return "developer" if role == "system" else role


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def _content(value: Any, role: str, param: str) -> list[Any]:
    if isinstance(value, str):
        return [{"type": _TEXT_PART.get(role, "output_text"), "text": value}]
    if not isinstance(value, list):
        raise invalid(param, f"'{param}' must be a string or an array of content parts.")
    for index, part in enumerate(value):
        check_object(part, f"{param}[{index}]")
    return value


def _joined_text(parts: list[Any]) -> str:
    return "\n".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
