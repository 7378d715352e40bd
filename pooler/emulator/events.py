"""The stream event sequence of one response (protocol §4.1), as plain dicts. Pure.

Text:       created → in_progress → output_item.added → content_part.added →
            N * output_text.delta → output_text.done → content_part.done →
            output_item.done → completed
Tool call:  created → in_progress → output_item.added → function_call_arguments.delta →
            function_call_arguments.done → output_item.done → completed
Tool search (client): created → in_progress → output_item.added → output_item.done → completed
Compaction: created → in_progress → output_item.added → output_item.done → completed
Image:      created → in_progress → output_item.added → image_generation_call.in_progress
            → image_generation_call.generating → image_generation_call.completed
            → output_item.done (the PNG, base64, in `result`) → completed
Prewarm (`generate: false`): created → completed.
Every event carries `sequence_number`, counting from 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any

from pooler.emulator.replies import (
    CompactionReply,
    ImageReply,
    Reply,
    TextReply,
    ToolCallReply,
    ToolSearchReply,
)


@dataclass(frozen=True)
class Turn:
    """Everything about one response besides its content."""

    response_id: str
    model: str
    created_at: int
    input_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    deltas: int = 4


def encode_sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


# The knob, and the key of the terminal event's `response.metadata` it fills: this
# machine's CLOCK_MONOTONIC (`time.monotonic()`, the same in every process) in seconds.
SENT_AT = "x-emulator-sent-at"


def stamp_sent_at(terminal: dict[str, Any]) -> None:
    """The `x-emulator-sent-at` knob: the terminal event's `response.metadata` says when it
    was sent, in this machine's CLOCK_MONOTONIC seconds (the same clock in every process)."""
    response = terminal.get("response")
    if isinstance(response, dict):
        stamp = f"{time.monotonic():.6f}"
        response["metadata"] = {**(response.get("metadata") or {}), SENT_AT: stamp}


def split_text(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` consecutive chunks of near-equal size (fewer when it is shorter)."""
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    chunks, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        chunks.append(text[start:end])
        start = end
    return chunks


def pad_text(text: str, pieces: int) -> str:
    """`text` repeated until it splits into `pieces` chunks (load tests ask for N deltas)."""
    text = text or "."
    while len(text) < pieces:
        text = f"{text} {text}"
    return text


def usage_dict(turn: Turn, output_tokens: int) -> dict[str, Any]:
    output = output_tokens + turn.reasoning_tokens
    return {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
        "total_tokens": turn.input_tokens + output,
    }


def response_object(
    turn: Turn, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": turn.response_id,
        "object": "response",
        "created_at": turn.created_at,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": False,
        "metadata": {},
        "usage": usage,
    }


def _suffix(turn: Turn) -> str:
    return turn.response_id.removeprefix("resp_")


def _text_events(turn: Turn, text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    item_id = f"msg_{_suffix(turn)}"
    part = {"type": "output_text", "text": text, "annotations": []}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "completed"}
    events: list[dict[str, Any]] = [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    for piece in split_text(text, turn.deltas):
        events.append(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        )
    final = {**item, "content": [part]}
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": final},
    ]
    return events, final


def _tool_call_events(
    turn: Turn, reply: ToolCallReply
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    item_id = f"fc_{_suffix(turn)}"
    item = {
        "id": item_id,
        "type": "function_call",
        "status": "in_progress",
        "call_id": f"call_{_suffix(turn)}",
        "name": reply.name,
        "arguments": "",
    }
    if reply.namespace is not None:
        item["namespace"] = reply.namespace
    final = {**item, "status": "completed", "arguments": reply.arguments}
    where = {"item_id": item_id, "output_index": 0}
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.function_call_arguments.delta", **where, "delta": reply.arguments},
        {"type": "response.function_call_arguments.done", **where, "arguments": reply.arguments},
        {"type": "response.output_item.done", "output_index": 0, "item": final},
    ]
    return events, final


def _tool_search_events(
    turn: Turn, reply: ToolSearchReply
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    item = {
        "id": f"ts_{_suffix(turn)}",
        "type": "tool_search_call",
        "status": "in_progress",
        "call_id": f"call_{_suffix(turn)}",
        "execution": "client",
        "arguments": {"query": reply.query, "limit": 8},
    }
    final = {**item, "status": "completed"}
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": final},
    ]
    return events, final


def compaction_item(turn: Turn) -> dict[str, Any]:
    digest = hashlib.sha256(turn.response_id.encode()).digest()
    opaque = "emu_cmp_" + base64.urlsafe_b64encode(digest * 4).decode().rstrip("=")
    return {"type": "compaction", "id": f"cmp_{_suffix(turn)}", "encrypted_content": opaque}


def _compaction_events(turn: Turn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    final = compaction_item(turn)
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": final},
        {"type": "response.output_item.done", "output_index": 0, "item": final},
    ]
    return events, final


def tiny_png(prompt: str) -> bytes:
    """A valid 1x1 PNG whose colour is drawn from the prompt (different prompts, different
    images; the same prompt, the same one)."""
    red, green, blue = hashlib.sha256(prompt.encode()).digest()[:3]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 1x1, 8-bit RGB
    pixels = zlib.compress(bytes([0, red, green, blue]))
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _image_events(turn: Turn, reply: ImageReply) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    item_id = f"ig_{_suffix(turn)}"
    item = {"id": item_id, "type": "image_generation_call", "status": "in_progress"}
    final = {
        **item,
        "status": "completed",
        "result": base64.b64encode(tiny_png(reply.prompt)).decode(),
        "revised_prompt": reply.prompt,
        "size": reply.size,
        "output_format": "png",
    }
    where = {"item_id": item_id, "output_index": 0}
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.image_generation_call.in_progress", **where},
        {"type": "response.image_generation_call.generating", **where},
        {"type": "response.image_generation_call.completed", **where},
        {"type": "response.output_item.done", "output_index": 0, "item": final},
    ]
    return events, final


def _output_tokens(item: dict[str, Any]) -> int:
    if item["type"] == "message":
        return len(item["content"][0]["text"]) // 4 + 1
    if item["type"] == "function_call":
        return len(item["arguments"]) // 4 + 1
    if item["type"] == "tool_search_call":
        return len(item["arguments"]["query"]) // 4 + 1
    if item["type"] == "image_generation_call":
        return 272  # what one 1024x1024 low-quality image costs, roughly
    return len(item["encrypted_content"]) // 8


def build_events(reply: Reply, turn: Turn, *, generate: bool = True) -> list[dict[str, Any]]:
    """The whole event sequence for one response, numbered."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object(turn, "in_progress", [], None)},
    ]
    output: list[dict[str, Any]] = []
    if generate:
        events.append(
            {
                "type": "response.in_progress",
                "response": response_object(turn, "in_progress", [], None),
            }
        )
        if isinstance(reply, TextReply):
            body, item = _text_events(turn, reply.text)
        elif isinstance(reply, ToolCallReply):
            body, item = _tool_call_events(turn, reply)
        elif isinstance(reply, ToolSearchReply):
            body, item = _tool_search_events(turn, reply)
        elif isinstance(reply, ImageReply):
            body, item = _image_events(turn, reply)
        else:
            assert isinstance(reply, CompactionReply)
            body, item = _compaction_events(turn)
        events += body
        output.append(item)
    usage = usage_dict(turn, sum(_output_tokens(item) for item in output))
    events.append(
        {
            "type": "response.completed",
            "response": response_object(turn, "completed", output, usage),
        }
    )
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events
