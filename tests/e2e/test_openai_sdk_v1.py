"""The real OpenAI Python SDK, sync and async, against the gateway's `/v1` surface: the
Responses and Chat Completions APIs, streaming and not, function calling round trips, the
model list. Everything reaches the emulator through the Pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import trio
from harness import Stack, open_stack

MODEL = "gpt-5.5"
WEATHER_CHAT_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL: Any = {"type": "function", **WEATHER_CHAT_TOOL["function"]}
ASK_WEATHER = 'Call get_weather with {"city":"Paris"}'


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key, max_retries=0)


def responses_sync(stack: Stack) -> dict[str, Any]:
    sdk = client(stack)
    found: dict[str, Any] = {}
    plain = sdk.responses.create(model=MODEL, input="Reply with exactly: plain answer")
    found["plain"] = plain.output_text
    found["plain_usage"] = plain.usage.total_tokens if plain.usage else 0
    deltas: list[str] = []
    types: list[str] = []
    with sdk.responses.create(
        model=MODEL, input="Reply with exactly: streamed answer", stream=True
    ) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    found["streamed"], found["types"] = "".join(deltas), types
    with sdk.responses.stream(model=MODEL, input="Reply with exactly: helper answer") as helper:
        for _ in helper:
            pass
        found["helper"] = helper.get_final_response().output_text
    # A function-calling round trip: the call, then its output back.
    first = sdk.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    found["call"] = (calls[0].name, json.loads(calls[0].arguments))
    second = sdk.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": ASK_WEATHER},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": calls[0].name,
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
    )
    found["after_call"] = second.output_text
    found["models"] = [model.id for model in sdk.models.list()]
    return found


def chat_sync(stack: Stack) -> dict[str, Any]:
    sdk = client(stack)
    found: dict[str, Any] = {}
    plain = sdk.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Reply with exactly: chat answer"},
        ],
    )
    found["plain"] = plain.choices[0].message.content
    found["plain_finish"] = plain.choices[0].finish_reason
    assert plain.usage is not None
    found["plain_usage"] = plain.usage.total_tokens
    chunks = list(
        sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Reply with exactly: chat stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    found["streamed"] = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    found["first_role"] = chunks[0].choices[0].delta.role
    found["stream_finish"] = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    found["usage_chunk"] = chunks[-1].usage.total_tokens if chunks[-1].usage else None
    # A function-calling round trip.
    messages: list[Any] = [{"role": "user", "content": ASK_WEATHER}]
    call = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_CHAT_TOOL])
    choice = call.choices[0]
    found["call_finish"] = choice.finish_reason
    tool_call = (choice.message.tool_calls or [])[0]
    found["call"] = (tool_call.function.name, json.loads(tool_call.function.arguments))
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": "sunny"})
    answer = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_CHAT_TOOL])
    found["after_call"] = answer.choices[0].message.content
    # The same call, streamed: argument deltas reassemble.
    streamed_call = sdk.chat.completions.create(
        model=MODEL, messages=messages[:1], tools=[WEATHER_CHAT_TOOL], stream=True
    )
    arguments, finish = [], None
    for chunk in streamed_call:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            if delta_call.function and delta_call.function.arguments:
                arguments.append(delta_call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    found["streamed_call"] = (json.loads("".join(arguments)), finish)
    return found


async def async_clients(stack: Stack) -> dict[str, Any]:
    sdk = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.key, max_retries=0)
    found: dict[str, Any] = {}
    response = await sdk.responses.create(model=MODEL, input="Reply with exactly: async one")
    found["responses"] = response.output_text
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Reply with exactly: async two"}],
        stream=True,
    )
    parts = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    found["chat"] = "".join(parts)
    await sdk.close()
    return found


async def test_the_python_sdk_speaks_responses_through_v1(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(60):
            found = await trio.to_thread.run_sync(responses_sync, stack)
        assert found["plain"] == "plain answer" and found["plain_usage"] > 0
        assert found["streamed"] == "streamed answer"
        assert found["types"][0] == "response.created"
        assert found["types"][-1] == "response.completed"
        assert not [t for t in found["types"] if t.startswith("codex.")]
        assert found["helper"] == "helper answer"
        assert found["call"] == ("get_weather", {"city": "Paris"})
        assert found["after_call"].startswith("Tool output: sunny")
        assert MODEL in found["models"]
        upstream = await stack.upstream_requests()
        assert len(upstream) == 5  # every call went through the Pool to the emulator


async def test_the_python_sdk_speaks_chat_through_v1(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(60):
            found = await trio.to_thread.run_sync(chat_sync, stack)
        assert (found["plain"], found["plain_finish"]) == ("chat answer", "stop")
        assert found["plain_usage"] > 0
        assert found["streamed"] == "chat stream"
        assert found["first_role"] == "assistant"
        assert found["stream_finish"] == "stop"
        assert found["usage_chunk"] and found["usage_chunk"] > 0
        assert found["call_finish"] == "tool_calls"
        assert found["call"] == ("get_weather", {"city": "Paris"})
        assert found["after_call"].startswith("Tool output: sunny")
        assert found["streamed_call"] == ({"city": "Paris"}, "tool_calls")


async def test_the_async_python_sdk_through_v1(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(60):
            found = await trio.to_thread.run_sync(
                lambda: __import__("asyncio").run(async_clients(stack))
            )
        assert found == {"responses": "async one", "chat": "async two"}


def images_sync(stack: Stack) -> tuple[bytes, bytes]:
    import base64

    sdk = client(stack)
    answer = sdk.images.generate(
        model="gpt-image-1", prompt="a lighthouse at dawn", size="1024x1024"
    )
    assert answer.data and len(answer.data) == 1
    image = base64.b64decode(answer.data[0].b64_json or "")
    edited = sdk.images.edit(
        model="gpt-image-1", image=("in.png", image, "image/png"), prompt="add a boat"
    )
    assert edited.data and len(edited.data) == 1
    # Several input images: the SDK sends them as repeated `image[]` parts.
    combined = sdk.images.edit(
        model="gpt-image-1",
        image=[("a.png", image, "image/png"), ("b.png", image, "image/png")],
        prompt="put both in one frame",
    )
    assert combined.data and len(combined.data) == 1
    return image, base64.b64decode(edited.data[0].b64_json or "")


async def test_the_python_sdk_generates_an_image_through_v1(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(60):
            image, edited = await trio.to_thread.run_sync(images_sync, stack)
        assert image.startswith(b"\x89PNG\r\n\x1a\n")
        assert edited.startswith(b"\x89PNG\r\n\x1a\n") and edited != image
        requests = await stack.upstream_requests()
        assert [r["status"] for r in requests] == [200, 200, 200]  # one image turn each
