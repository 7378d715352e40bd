import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.emulator.events import Turn, build_events, encode_sse, pad_text, split_text
from pooler.emulator.replies import (
    DEFAULT_TEXT,
    CompactionReply,
    TextReply,
    ToolCallReply,
    decide_reply,
)

TURN = Turn(response_id="resp_abc", model="gpt-5.5", created_at=1, input_tokens=100)


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def function_tool(name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"type": "object", "properties": properties or {}}
    return {"type": "function", "name": name, "parameters": params}


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_text_sequence_shape_and_numbers() -> None:
    events = build_events(TextReply("Hello from the Codex emulator."), TURN)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == "Hello from the Codex emulator."
    assert {d["item_id"] for d in deltas} == {"msg_abc"}
    done = events[-2]["item"]
    assert done["type"] == "message" and done["status"] == "completed"
    assert done["content"][0]["text"] == "Hello from the Codex emulator."
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["id"] == "resp_abc"
    assert completed["output"] == [done]
    usage = completed["usage"]
    assert usage["input_tokens"] == 100
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert set(usage) == {
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    }


def test_tool_call_sequence() -> None:
    events = build_events(ToolCallReply("exec_command", '{"cmd":"ls"}'), TURN)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[-2]["item"]
    assert item["type"] == "function_call" and item["call_id"].startswith("call_")
    assert json.loads(item["arguments"]) == {"cmd": "ls"}


def test_compaction_has_exactly_one_item() -> None:
    events = build_events(CompactionReply(), TURN)
    output = events[-1]["response"]["output"]
    assert len(output) == 1 and output[0]["type"] == "compaction"
    assert output[0]["id"].startswith("cmp_") and output[0]["encrypted_content"]
    assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == output


def test_prewarm_is_created_then_completed() -> None:
    events = build_events(TextReply("x"), TURN, generate=False)
    assert types(events) == ["response.created", "response.completed"]
    assert events[-1]["response"]["output"] == []


def test_sse_encoding() -> None:
    event = {"type": "response.created", "sequence_number": 0}
    raw = encode_sse(event)
    assert raw.startswith(b"event: response.created\ndata: {")
    assert raw.endswith(b"\n\n") and raw.count(b"\n\n") == 1
    assert json.loads(raw.split(b"data: ", 1)[1]) == event


@given(st.text(max_size=200), st.integers(min_value=1, max_value=50))
def test_split_text_keeps_the_text(text: str, pieces: int) -> None:
    chunks = split_text(text, pieces)
    assert "".join(chunks) == text
    assert len(chunks) == max(1, min(pieces, len(text)))


def test_pad_text_reaches_the_requested_deltas() -> None:
    assert len(split_text(pad_text("ok", 50), 50)) == 50


@pytest.mark.parametrize(
    ("tools", "name", "arguments"),
    [
        (
            [function_tool("exec_command", {"cmd": {"type": "string"}})],
            "exec_command",
            {"cmd": "ls -la"},
        ),
        ([function_tool("exec_command")], "exec_command", {"cmd": "ls -la"}),
        ([function_tool("shell")], "shell", {"command": ["bash", "-lc", "ls -la"]}),
        (
            [function_tool("shell", {"command": {"type": "array"}})],
            "shell",
            {"command": ["bash", "-lc", "ls -la"]},
        ),
        (
            [function_tool("shell", {"command": {"type": "string"}})],
            "shell",
            {"command": "ls -la"},
        ),
        (
            [{"type": "function", "function": {"name": "exec_command", "parameters": {}}}],
            "exec_command",
            {"cmd": "ls -la"},
        ),
    ],
)
def test_run_request_becomes_a_tool_call(tools: Any, name: str, arguments: Any) -> None:
    body = {"input": [user("Please run `ls -la` now")], "tools": [*tools]}
    reply = decide_reply(body)
    assert isinstance(reply, ToolCallReply)
    assert reply.name == name and json.loads(reply.arguments) == arguments


def test_run_without_a_shell_tool_is_text() -> None:
    body = {"input": [user("please run `ls`")], "tools": [function_tool("view_image")]}
    assert decide_reply(body) == TextReply(DEFAULT_TEXT)
    assert decide_reply({"input": [user("please run `ls`")]}) == TextReply(DEFAULT_TEXT)
    # a backticked command without the word "run" is not a request to run it
    body = {"input": [user("what does `ls` do?")], "tools": [function_tool("exec_command")]}
    assert decide_reply(body) == TextReply(DEFAULT_TEXT)


def test_function_call_output_is_echoed() -> None:
    long = "x" * 500
    reply = decide_reply({"input": [user("hi"), {"type": "function_call_output", "output": long}]})
    assert reply == TextReply("Tool output: " + "x" * 200)
    parts = [{"type": "input_text", "text": "hello"}, {"type": "input_text", "text": "world"}]
    reply = decide_reply({"input": [{"type": "function_call_output", "output": parts}]})
    assert isinstance(reply, TextReply) and reply.text.startswith("Tool output: hello")


def test_reply_with_exactly() -> None:
    body = {"input": [user("Be brief.\nReply with exactly:   ok  \nThanks")]}
    assert decide_reply(body) == TextReply("ok")
    assert decide_reply({"input": "Reply with exactly: pong"}) == TextReply("pong")


def test_compaction_trigger_and_default() -> None:
    body = {"input": [user("hi"), {"type": "compaction_trigger"}]}
    assert decide_reply(body) == CompactionReply()
    assert decide_reply({"input": [user("hi")]}) == TextReply(DEFAULT_TEXT)
    assert decide_reply({}) == TextReply(DEFAULT_TEXT)
    assistant = {"type": "message", "role": "assistant", "content": "Reply with exactly: no"}
    assert decide_reply({"input": [assistant]}) == TextReply(DEFAULT_TEXT)


def test_a_named_function_call_needs_that_tool_offered() -> None:
    weather = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    nested = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    text = 'Call get_weather with {"city":"Paris"}'
    for tools in (weather, nested):
        reply = decide_reply({"input": text, "tools": tools})
        assert reply == ToolCallReply("get_weather", '{"city":"Paris"}')
    assert isinstance(decide_reply({"input": text, "tools": []}), TextReply)


def test_a_forced_image_tool_draws_one_png() -> None:
    import base64
    import zlib

    from pooler.emulator.events import build_events, tiny_png
    from pooler.emulator.replies import ImageReply

    tool = {"type": "image_generation", "model": "gpt-image-1", "size": "1024x1536"}
    body = {"input": "a red fox", "tools": [tool], "tool_choice": {"type": "image_generation"}}
    reply = decide_reply(body)
    assert reply == ImageReply("a red fox", "1024x1536")
    assert isinstance(decide_reply({**body, "tool_choice": "auto"}), TextReply)
    events = build_events(reply, TURN)
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "image_generation_call" and item["status"] == "completed"
    png = base64.b64decode(item["result"])
    assert png == tiny_png("a red fox") != tiny_png("a grey wolf")
    # A valid PNG: signature, chunks with correct CRCs, one RGB pixel.
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, kinds = 8, []
    while at < len(png):
        size = int.from_bytes(png[at : at + 4], "big")
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + size]
        crc = int.from_bytes(png[at + 8 + size : at + 12 + size], "big")
        assert zlib.crc32(kind + data) == crc
        kinds.append(kind)
        if kind == b"IDAT":
            assert len(zlib.decompress(data)) == 4  # filter byte + R, G, B
        at += 12 + size
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
