"""POST /v1/chat/completions body → a Codex `/responses` body (`chat_to_responses`). Pure.

Every top-level field falls in one of four sets, checked before anything is built:

    forwarded     translated into the upstream body (messages, tools, tool_choice, ...)
    local         read by the gateway, never sent (stream, stream_options)
    DROPPED       validated, accepted, not forwarded, because the ChatGPT backend answers
                  400 "Unsupported parameter" to its Responses counterpart: max_tokens,
                  max_completion_tokens (no output cap upstream: the model's own limit
                  applies), temperature, top_p, metadata, user, store, safety_identifier,
                  prompt_cache_retention. They are listed in `NormalizedRequest.dropped`.
    NEUTRAL       accepted only at the value that changes nothing (n=1, logprobs=false,
                  frequency_penalty=0, stop=null, modalities=["text"], ...)

Anything else (n>1, logprobs, seed, stop, audio, prediction, web_search_options, the
legacy functions/function_call, ...) is 400 `unsupported_parameter` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pooler.translate.chat_messages import convert_messages
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

__all__ = ["DROPPED", "FORWARDED", "chat_to_responses"]

FORWARDED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "response_format",
        "verbosity",
        "prompt_cache_key",
        "service_tier",
    }
)
_LOCAL = frozenset({"stream", "stream_options"})

# Each with the check its value must pass before it is dropped.
DROPPED: dict[str, Callable[[Any, str], object]] = {
    "max_tokens": lambda v, p: check_int(v, p, 1),
    "max_completion_tokens": lambda v, p: check_int(v, p, 1),
    "temperature": lambda v, p: check_number(v, p, 0, 2),
    "top_p": lambda v, p: check_number(v, p, 0, 1),
    "metadata": check_string_map,
    "user": check_string,
    "store": check_bool,
    "safety_identifier": check_string,
    "prompt_cache_retention": check_string,
}

NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v == 1 and not isinstance(v, bool),
    "logprobs": lambda v: v is False,
    "top_logprobs": lambda v: v == 0 and not isinstance(v, bool),
    "frequency_penalty": lambda v: v == 0 and not isinstance(v, bool),
    "presence_penalty": lambda v: v == 0 and not isinstance(v, bool),
    "logit_bias": lambda v: v == {},
    "stop": lambda v: v == [],
    "modalities": lambda v: v == ["text"],
}

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
VERBOSITIES = ("low", "medium", "high")
TOOL_CHOICE_MODES = ("auto", "none", "required")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACCEPTED = FORWARDED | _LOCAL | frozenset(DROPPED)


def chat_to_responses(body: dict[str, Any]) -> NormalizedRequest:
    """Validate a chat request and build the upstream Responses body.

    Raises `UnsupportedParameter` (400 `unsupported_parameter`) or `BadRequest`
    (400 `invalid_request`), `param` naming the field.
    """
    reject_unknown(body, _ACCEPTED, NEUTRAL)
    model = check_string(body.get("model"), "model")
    dropped = tuple(key for key in DROPPED if present(body, key))
    for key in dropped:
        DROPPED[key](body[key], key)
    client_stream = check_bool(body["stream"], "stream") if present(body, "stream") else False
    instructions, items = convert_messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    upstream: dict[str, Any] = {"model": model}
    if instructions is not None:
        upstream["instructions"] = instructions
    upstream |= {
        "input": items,
        "tools": tools,
        "tool_choice": _tool_choice(body.get("tool_choice"), tools),
        "parallel_tool_calls": _parallel(body),
        "store": False,
        "stream": True,
    }
    upstream |= _options(body)
    return NormalizedRequest(
        body=upstream,
        model=model,
        client_stream=client_stream,
        include_usage=_include_usage(body.get("stream_options")),
        dropped=dropped,
    )


def _parallel(body: dict[str, Any]) -> bool:
    value = body.get("parallel_tool_calls")
    return True if value is None else check_bool(value, "parallel_tool_calls")


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """reasoning, text, prompt_cache_key and service_tier, when the client set them."""
    out: dict[str, Any] = {}
    if present(body, "reasoning_effort"):
        effort = check_choice(body["reasoning_effort"], "reasoning_effort", REASONING_EFFORTS)
        out["reasoning"] = {"effort": effort}
    text: dict[str, Any] = {}
    if present(body, "response_format"):
        text["format"] = _text_format(body["response_format"])
    if present(body, "verbosity"):
        text["verbosity"] = check_choice(body["verbosity"], "verbosity", VERBOSITIES)
    if text:
        out["text"] = text
    if present(body, "prompt_cache_key"):
        out["prompt_cache_key"] = check_string(body["prompt_cache_key"], "prompt_cache_key")
    if present(body, "service_tier"):
        tier = service_tier(body["service_tier"])
        if tier is not None:
            out["service_tier"] = tier
    return out


def _include_usage(value: Any) -> bool:
    if value is None:
        return False
    options = check_object(value, "stream_options")
    for key in options:
        if key not in ("include_usage", "include_obfuscation"):
            raise unsupported(f"stream_options.{key}")
    usage = options.get("include_usage")
    return False if usage is None else check_bool(usage, "stream_options.include_usage")


def _text_format(value: Any) -> dict[str, Any]:
    fmt = check_object(value, "response_format")
    kind = check_choice(
        fmt.get("type"), "response_format.type", ("text", "json_object", "json_schema")
    )
    if kind != "json_schema":
        return {"type": kind}
    spec = check_object(fmt.get("json_schema"), "response_format.json_schema")
    out: dict[str, Any] = {
        "type": "json_schema",
        "name": check_string(spec.get("name"), "response_format.json_schema.name"),
        "schema": check_object(spec.get("schema", {}), "response_format.json_schema.schema"),
    }
    if present(spec, "strict"):
        out["strict"] = check_bool(spec["strict"], "response_format.json_schema.strict")
    if present(spec, "description"):
        out["description"] = check_string(
            spec["description"], "response_format.json_schema.description", allow_empty=True
        )
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    """Chat's nested tool definitions, flattened into Responses tools."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("tools", "'tools' must be an array.")
    tools = [_tool(raw, f"tools[{index}]") for index, raw in enumerate(value)]
    names = [tool["name"] for tool in tools]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise invalid(f"tools[{index}].name", f"Duplicate tool name {name!r}.")
    return tools


def _tool(raw: Any, param: str) -> dict[str, Any]:
    tool = check_object(raw, param)
    kind = tool.get("type")
    if kind not in ("function", "custom"):
        raise unsupported(f"{param}.type", f"Tools of type {kind!r} are not supported.")
    spec = check_object(tool.get(kind), f"{param}.{kind}")
    name = check_string(spec.get("name"), f"{param}.{kind}.name")
    if not TOOL_NAME.match(name):
        raise invalid(f"{param}.{kind}.name", "Tool names must match ^[A-Za-z0-9_-]{1,64}$.")
    out: dict[str, Any] = {"type": kind, "name": name}
    if present(spec, "description"):
        out["description"] = check_string(
            spec["description"], f"{param}.{kind}.description", allow_empty=True
        )
    if kind == "custom":
        if present(spec, "format"):
            out["format"] = check_object(spec["format"], f"{param}.custom.format")
        return out
    params = spec.get("parameters")
    out["parameters"] = (
        {"type": "object", "properties": {}}
        if params is None
        else check_object(params, f"{param}.function.parameters")
    )
    if present(spec, "strict"):
        out["strict"] = check_bool(spec["strict"], f"{param}.function.strict")
    return out


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if value is None:
        return "auto"
    if isinstance(value, str):
        return check_choice(value, "tool_choice", TOOL_CHOICE_MODES)
    choice = check_object(value, "tool_choice")
    kind = choice.get("type")
    if kind == "allowed_tools":
        spec = check_object(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        mode = check_choice(
            spec.get("mode"), "tool_choice.allowed_tools.mode", ("auto", "required")
        )
        listed = spec.get("tools")
        if not isinstance(listed, list) or not listed:
            raise invalid("tool_choice.allowed_tools.tools", "It must be a non-empty array.")
        named = [
            _named_tool(raw, f"tool_choice.allowed_tools.tools[{index}]", tools)
            for index, raw in enumerate(listed)
        ]
        return {"type": "allowed_tools", "mode": mode, "tools": named}
    return _named_tool(choice, "tool_choice", tools)


def _named_tool(raw: Any, param: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    choice = check_object(raw, param)
    kind = check_choice(choice.get("type"), f"{param}.type", ("function", "custom"))
    spec = check_object(choice.get(kind), f"{param}.{kind}")
    name = check_string(spec.get("name"), f"{param}.{kind}.name")
    if not any(tool["type"] == kind and tool["name"] == name for tool in tools):
        raise invalid(f"{param}.{kind}.name", f"No {kind} tool named {name!r} in 'tools'.")
    return {"type": kind, "name": name}
