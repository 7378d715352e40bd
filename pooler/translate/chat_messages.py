"""Chat Completions `messages` → Codex Responses `instructions` + `input` items. Pure.

    system / developer (leading)   → `instructions` (texts joined by a blank line)
    system / developer (later)     → a `developer` message item, in place
    user                           → `message` item: `input_text`, `input_image`, `input_file`
    assistant                      → `message` item with `output_text` (when it has text),
                                     then one `function_call` / `custom_tool_call` per tool call
    tool                           → `function_call_output` (or `custom_tool_call_output` when
                                     the call it answers was a custom tool call)

Only leading system messages are lifted, so the order of everything else is kept exactly.
The Codex backend refuses `role: "system"` items ("System messages are not allowed") but
takes `developer` ones, which is what the Codex CLI itself sends.
"""

from __future__ import annotations

from typing import Any

from pooler.translate.common import (
    check_choice,
    check_object,
    check_string,
    invalid,
    present,
    unsupported,
)

__all__ = ["convert_messages"]

ROLES = ("system", "developer", "user", "assistant", "tool")
_INSTRUCTION_ROLES = ("system", "developer")
_IMAGE_DETAILS = ("auto", "low", "high")


def convert_messages(messages: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(`instructions` or None, `input` items) for a chat `messages` array."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "'messages' must be a non-empty array.")
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    custom_calls: set[str] = set()
    for index, raw in enumerate(messages):
        param = f"messages[{index}]"
        message = check_object(raw, param)
        role = message.get("role")
        if role == "function":
            raise unsupported(f"{param}.role", "Legacy 'function' messages are not supported.")
        role = check_choice(role, f"{param}.role", ROLES)
        if role in _INSTRUCTION_ROLES:
            text = _plain_text(message.get("content"), f"{param}.content")
            if not items:
                instructions.append(text)
            else:
                items.append(_message("developer", [_part("input_text", text)]))
        elif role == "user":
            items.append(_message("user", _user_parts(message.get("content"), param)))
        elif role == "assistant":
            items += _assistant_items(message, param, custom_calls)
        else:
            items.append(_tool_output(message, param, custom_calls))
    return ("\n\n".join(instructions) if instructions else None), items


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def _part(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, "text": text}


def _plain_text(content: Any, param: str) -> str:
    """A string, or an array of `text` parts joined without separators."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(param, f"'{param}' must be a string or an array of text parts.")
    texts: list[str] = []
    for index, raw in enumerate(content):
        part = check_object(raw, f"{param}[{index}]")
        if part.get("type") not in ("text", "refusal"):
            raise invalid(f"{param}[{index}].type", f"'{param}' only takes text parts here.")
        key = "refusal" if part["type"] == "refusal" else "text"
        texts.append(check_string(part.get(key), f"{param}[{index}].{key}", allow_empty=True))
    return "".join(texts)


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    param = f"{param}.content"
    if isinstance(content, str):
        return [_part("input_text", content)]
    if not isinstance(content, list) or not content:
        raise invalid(param, f"'{param}' must be a string or a non-empty array of parts.")
    return [_user_part(raw, f"{param}[{index}]") for index, raw in enumerate(content)]


def _user_part(raw: Any, param: str) -> dict[str, Any]:
    part = check_object(raw, param)
    kind = part.get("type")
    if kind == "text":
        return _part(
            "input_text", check_string(part.get("text"), f"{param}.text", allow_empty=True)
        )
    if kind == "image_url":
        return _image_part(part.get("image_url"), f"{param}.image_url")
    if kind == "file":
        return _file_part(check_object(part.get("file"), f"{param}.file"), f"{param}.file")
    if kind == "input_audio":
        raise unsupported(param, "Audio input parts are not supported.")
    raise invalid(f"{param}.type", f"Unknown content part type {kind!r}.")


def _image_part(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, str):  # some clients send the URL bare
        value = {"url": value}
    image = check_object(value, param)
    part = {"type": "input_image", "image_url": check_string(image.get("url"), f"{param}.url")}
    if present(image, "detail"):
        part["detail"] = check_choice(image["detail"], f"{param}.detail", _IMAGE_DETAILS)
    return part


def _file_part(file: dict[str, Any], param: str) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "input_file"}
    for key in ("file_id", "file_data", "filename"):
        if present(file, key):
            part[key] = check_string(file[key], f"{param}.{key}")
    if "file_id" not in part and "file_data" not in part:
        raise invalid(param, f"'{param}' needs a 'file_id' or 'file_data'.")
    return part


def _assistant_items(
    message: dict[str, Any], param: str, custom_calls: set[str]
) -> list[dict[str, Any]]:
    for legacy in ("function_call", "audio"):
        if present(message, legacy):
            raise unsupported(f"{param}.{legacy}")
    calls = message.get("tool_calls")
    has_calls = isinstance(calls, list) and bool(calls)
    items: list[dict[str, Any]] = []
    content = message.get("content")
    text = "" if content is None else _plain_text(content, f"{param}.content")
    if present(message, "refusal"):
        text += check_string(message["refusal"], f"{param}.refusal", allow_empty=True)
    if text or not has_calls:
        items.append(_message("assistant", [_part("output_text", text)]))
    if present(message, "tool_calls"):
        if not isinstance(calls, list):
            raise invalid(f"{param}.tool_calls", "'tool_calls' must be an array.")
        for index, raw in enumerate(calls):
            items.append(_tool_call(raw, f"{param}.tool_calls[{index}]", custom_calls))
    return items


def _tool_call(raw: Any, param: str, custom_calls: set[str]) -> dict[str, Any]:
    call = check_object(raw, param)
    call_id = check_string(call.get("id"), f"{param}.id")
    kind = call.get("type", "function")
    if kind == "custom":
        custom = check_object(call.get("custom"), f"{param}.custom")
        custom_calls.add(call_id)
        return {
            "type": "custom_tool_call",
            "call_id": call_id,
            "name": check_string(custom.get("name"), f"{param}.custom.name"),
            "input": check_string(custom.get("input"), f"{param}.custom.input", allow_empty=True),
        }
    if kind != "function":
        raise invalid(f"{param}.type", "Tool calls must be of type 'function' or 'custom'.")
    function = check_object(call.get("function"), f"{param}.function")
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": check_string(function.get("name"), f"{param}.function.name"),
        "arguments": check_string(
            function.get("arguments"), f"{param}.function.arguments", allow_empty=True
        ),
    }


def _tool_output(message: dict[str, Any], param: str, custom_calls: set[str]) -> dict[str, Any]:
    call_id = check_string(message.get("tool_call_id"), f"{param}.tool_call_id")
    output = _plain_text(message.get("content"), f"{param}.content")
    kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
    return {"type": kind, "call_id": call_id, "output": output}
