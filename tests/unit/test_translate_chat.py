"""Chat Completions ↔ Codex Responses translation (pooler/translate/chat_*)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pooler.emulator.events import Turn, build_events
from pooler.emulator.replies import TextReply, ToolCallReply
from pooler.errors import BadRequest, UnsupportedParameter, UpstreamError
from pooler.translate import (
    DONE_EVENT,
    ChatStreamTranslator,
    chat_completion_from_response,
    chat_to_responses,
    collect_chat_completion,
    encode_chunk,
)

TURN = Turn(
    response_id="resp_abc",
    model="gpt-5.5",
    created_at=1_700_000_000,
    input_tokens=120,
    cached_tokens=64,
    reasoning_tokens=16,
)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}], **fields}


def run(events: Iterable[dict[str, Any]], **kwargs: Any) -> tuple[ChatStreamTranslator, list[Any]]:
    translator = ChatStreamTranslator(model="gpt-5.5", **kwargs)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    return translator, chunks


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )


def tool_calls_of(chunks: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Tool-call fragments reassembled the way the OpenAI SDKs do: by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for fragment in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(fragment["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = fragment.get("id") or call["id"]
                function = fragment.get("function") or {}
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
    return calls


# An upstream stream shaped like the real backend's (and the emulator's), with any mix
# of text messages and function calls, each split into the given deltas.
Output = tuple[str, list[str]] | tuple[str, str, list[str]]


def upstream_events(
    outputs: list[Output], *, status: str = "completed", output_in_terminal: bool = False
) -> list[dict[str, Any]]:
    response = {"id": "resp_xyz", "object": "response", "created_at": 5, "model": "gpt-5.5"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**response, "status": "in_progress"}}
    ]
    items = []
    for index, output in enumerate(outputs):
        if len(output) == 2:
            item_id, pieces = f"msg_{index}", output[1]
            text = "".join(pieces)
            added = {"id": item_id, "type": "message", "role": "assistant", "content": []}
            deltas = [
                {"type": "response.output_text.delta", "item_id": item_id, "delta": piece}
                for piece in pieces
            ]
            part = {"type": "output_text", "text": text, "annotations": []}
            final = {**added, "status": "completed", "content": [part]}
        else:
            item_id, name, pieces = f"fc_{index}", output[1], output[2]
            added = {
                "id": item_id,
                "type": "function_call",
                "call_id": f"call_{index}",
                "name": name,
                "arguments": "",
            }
            deltas = [
                {"type": "response.function_call_arguments.delta", "item_id": item_id, "delta": p}
                for p in pieces
            ]
            final = {**added, "status": "completed", "arguments": "".join(pieces)}
        events.append({"type": "response.output_item.added", "output_index": index, "item": added})
        events += deltas
        events.append({"type": "response.output_item.done", "output_index": index, "item": final})
        items.append(final)
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 17,
    }
    terminal = {**response, "status": status, "usage": usage}
    terminal["output"] = items if output_in_terminal else []
    if status == "incomplete":
        terminal["incomplete_details"] = {"reason": "max_output_tokens"}
    events.append({"type": f"response.{status}", "response": terminal})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


# --- requests -------------------------------------------------------------------------


def test_full_conversation_maps_to_responses_items() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                    },
                    {"type": "file", "file": {"file_id": "file_1", "filename": "a.pdf"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "system", "content": "Now answer."},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "description": "Look",
                    "parameters": {"type": "object"},
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": "look"}},
        parallel_tool_calls=False,
        reasoning_effort="high",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        verbosity="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    request = chat_to_responses(body)
    assert request.client_stream and request.include_usage and request.model == "gpt-5.5"
    upstream = request.body
    assert upstream["instructions"] == "Be brief.\n\nUse tools."
    assert upstream["stream"] is True and upstream["store"] is False
    assert upstream["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                {"type": "input_file", "file_id": "file_1", "filename": "a.pdf"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me look."}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Now answer."}],
        },
    ]
    assert upstream["tools"] == [
        {
            "type": "function",
            "name": "look",
            "description": "Look",
            "parameters": {"type": "object"},
        }
    ]
    assert upstream["tool_choice"] == {"type": "function", "name": "look"}
    assert upstream["parallel_tool_calls"] is False
    assert upstream["reasoning"] == {"effort": "high"}
    assert upstream["text"] == {
        "format": {
            "type": "json_schema",
            "name": "out",
            "schema": {"type": "object"},
            "strict": True,
        },
        "verbosity": "low",
    }


def test_minimal_request_defaults() -> None:
    request = chat_to_responses(chat())
    assert not request.client_stream and not request.include_usage and request.dropped == ()
    assert request.body == {
        "model": "gpt-5.5",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "stream": True,
    }


def test_custom_tools_and_their_calls_round_trip() -> None:
    body = chat(
        messages=[
            {"role": "user", "content": "patch it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "custom",
                        "custom": {"name": "apply_patch", "input": "*** x"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]},
        ],
        tools=[{"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "text"}}}],
    )
    upstream = chat_to_responses(body).body
    assert upstream["tools"] == [
        {"type": "custom", "name": "apply_patch", "format": {"type": "text"}}
    ]
    assert upstream["input"][1:] == [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** x"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"},
    ]


@pytest.mark.parametrize(
    ("fields", "dropped"),
    [
        ({"max_tokens": 100}, ("max_tokens",)),
        (
            {"max_completion_tokens": 5, "temperature": 0.2, "top_p": 1},
            ("max_completion_tokens", "temperature", "top_p"),
        ),
        ({"user": "u1", "metadata": {"k": "v"}, "store": True}, ("metadata", "user", "store")),
    ],
)
def test_parameters_the_backend_rejects_are_validated_then_dropped(
    fields: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    request = chat_to_responses(chat(**fields))
    assert request.dropped == dropped
    assert not (set(fields) - {"store"}) & set(request.body)
    assert request.body["store"] is False
    assert "max_output_tokens" not in request.body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 7}, "seed"),
        ({"stop": ["\n"]}, "stop"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"stream_options": {"chunk_size": 3}}, "stream_options.chunk_size"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_unsupported_parameters_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        chat_to_responses(chat(**fields))
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", param)
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_neutral_values_of_unsupported_features_pass() -> None:
    fields = {
        "n": 1,
        "logprobs": False,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "seed": None,
    }
    request = chat_to_responses(chat(**fields, stop=None, modalities=["text"], logit_bias={}))
    assert request.body["input"][0]["role"] == "user"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"verbosity": "loud"}, "verbosity"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"metadata": {"k": 1}}, "metadata.k"),
    ],
)
def test_malformed_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_to_responses(chat(**fields))
    assert not isinstance(caught.value, UnsupportedParameter)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "invalid_request",
        param,
    )


def test_service_tier_aliases() -> None:
    assert chat_to_responses(chat(service_tier="fast")).body["service_tier"] == "priority"
    assert "service_tier" not in chat_to_responses(chat(service_tier="auto")).body


# A random conversation: system prefix, then user/assistant/tool turns with call ids.
_text = st.text(max_size=12)
_call_ids = st.text("abcdef0123456789", min_size=1, max_size=8).map(lambda s: f"call_{s}")
_user = st.builds(lambda t: {"role": "user", "content": t}, _text)
_assistant = st.builds(
    lambda t, ids: {
        "role": "assistant",
        "content": t,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "f", "arguments": t}} for i in ids
        ],
    },
    _text,
    st.lists(_call_ids, max_size=3),
)
_tool = st.builds(lambda i, t: {"role": "tool", "tool_call_id": i, "content": t}, _call_ids, _text)
_system = st.builds(lambda t: {"role": "system", "content": t}, _text)


def _expected_kinds(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(item type, role or call id) for each item a message should become."""
    role = message["role"]
    if role == "tool":
        return [("function_call_output", message["tool_call_id"])]
    if role == "system":
        return [("message", "developer")]
    if role == "user":
        return [("message", "user")]
    calls = [("function_call", call["id"]) for call in message["tool_calls"]]
    text = [("message", "assistant")] if message["content"] or not calls else []
    return text + calls


@given(
    st.lists(_system, max_size=3),
    st.lists(st.one_of(_user, _assistant, _tool, _system), min_size=1, max_size=12),
)
def test_message_order_roles_and_call_ids_survive(
    prefix: list[dict[str, Any]], turns: list[dict[str, Any]]
) -> None:
    turns = [{"role": "user", "content": "start"}, *turns]
    upstream = chat_to_responses(chat(messages=prefix + turns)).body
    if prefix:
        assert upstream["instructions"] == "\n\n".join(m["content"] for m in prefix)
    else:
        assert "instructions" not in upstream
    got = [(item["type"], item.get("role") or item["call_id"]) for item in upstream["input"]]
    assert got == [kind for message in turns for kind in _expected_kinds(message)]
    json.dumps(upstream)  # the upstream body is plain JSON


# --- streaming responses --------------------------------------------------------------


def test_emulator_text_stream_becomes_chunks() -> None:
    events = build_events(TextReply("Hello there, friend."), TURN)
    translator, chunks = run(events, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == "Hello there, friend."
    assert {c["id"] for c in chunks} == {"chatcmpl-abc"}
    assert {c["created"] for c in chunks} == {TURN.created_at}
    assert {(c["object"], c["model"]) for c in chunks} == {("chat.completion.chunk", "gpt-5.5")}
    finish = chunks[-2]["choices"][0]
    assert (finish["delta"], finish["finish_reason"]) == ({}, "stop")
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 120
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 64}
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 16}
    assert usage["usage"]["total_tokens"] == 120 + usage["usage"]["completion_tokens"]
    assert translator.send_done and translator.finish_reason == "stop"
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


def test_emulator_tool_call_stream_finishes_with_tool_calls() -> None:
    reply = ToolCallReply("exec_command", '{"cmd":"ls -la"}')
    _, chunks = run(build_events(reply, TURN))
    head = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": "call_abc",
        "type": "function",
        "function": {"name": "exec_command", "arguments": ""},
    }
    assert tool_calls_of(chunks) == {
        0: {"id": "call_abc", "name": "exec_command", "arguments": '{"cmd":"ls -la"}'}
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in chunks[-1]  # include_usage was not asked
    completion = collect_chat_completion(build_events(reply, TURN), model="gpt-5.5")
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["message"]["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "exec_command", "arguments": '{"cmd":"ls -la"}'},
        }
    ]
    ChatCompletion.model_validate(completion)


_pieces = st.lists(st.text(min_size=1, max_size=6), max_size=5)
_outputs = st.lists(
    st.one_of(
        st.tuples(st.just("text"), _pieces),
        st.tuples(st.just("call"), st.sampled_from(["f", "g_1"]), _pieces),
    ),
    max_size=4,
)


@settings(max_examples=150)
@given(_outputs, st.booleans(), st.booleans())
def test_deltas_reassemble_in_stream_and_collection(
    outputs: list[Output], include_usage: bool, output_in_terminal: bool
) -> None:
    events = upstream_events(outputs, output_in_terminal=output_in_terminal)
    translator, chunks = run(events, include_usage=include_usage)
    texts = ["".join(o[1]) for o in outputs if len(o) == 2]
    calls = [o for o in outputs if len(o) == 3]
    assert content_of(chunks) == "".join(texts)
    streamed = tool_calls_of(chunks)
    assert [streamed[i]["arguments"] for i in sorted(streamed)] == ["".join(c[2]) for c in calls]
    assert [streamed[i]["name"] for i in sorted(streamed)] == [c[1] for c in calls]
    expected_reason = "tool_calls" if calls else "stop"
    assert translator.finish_reason == expected_reason
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == expected_reason and reasons.count(None) == len(reasons) - 1
    assert (chunks[-1]["choices"] == []) is include_usage
    assert len({chunk["id"] for chunk in chunks}) == 1

    completion = collect_chat_completion(events, model="gpt-5.5")
    message = completion["choices"][0]["message"]
    assert completion["choices"][0]["finish_reason"] == expected_reason
    assert (message["content"] or "") == "".join(texts)
    collected = [call["function"]["arguments"] for call in message.get("tool_calls", [])]
    assert collected == ["".join(c[2]) for c in calls]
    assert completion["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


@given(_outputs)
def test_items_without_deltas_are_sent_whole(outputs: list[Output]) -> None:
    """A stream that skips the delta events still yields every character."""
    events = [e for e in upstream_events(outputs) if not e["type"].endswith(".delta")]
    events = [e for e in events if e["type"] != "response.output_item.added"]
    _, chunks = run(events)
    assert content_of(chunks) == "".join("".join(o[1]) for o in outputs if len(o) == 2)
    streamed = tool_calls_of(chunks)
    calls = [o for o in outputs if len(o) == 3]
    assert [streamed[i]["arguments"] for i in sorted(streamed)] == ["".join(c[2]) for c in calls]


def test_incomplete_response_finishes_with_length() -> None:
    events = upstream_events([("text", ["cut sh"])], status="incomplete")
    translator, chunks = run(events)
    assert translator.finish_reason == "length" and translator.send_done
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    completion = collect_chat_completion(events, model="m")
    assert completion["choices"][0]["finish_reason"] == "length"


def test_content_filter_reason() -> None:
    response = {
        "status": "incomplete",
        "incomplete_details": {"reason": "content_filter"},
        "output": [],
    }
    completion = chat_completion_from_response(response, model="m", created=3)
    assert completion["choices"][0]["finish_reason"] == "content_filter"
    assert completion["created"] == 3 and completion["choices"][0]["message"]["content"] == ""


def failed_event(code: str, message: str) -> dict[str, Any]:
    error = {"code": code, "message": message}
    return {
        "type": "response.failed",
        "response": {"id": "resp_xyz", "status": "failed", "error": error},
    }


def test_failure_after_output_is_an_error_payload_without_done() -> None:
    events = upstream_events([("text", ["partial"])])[:-1]
    translator, chunks = run([*events, failed_event("server_error", "account acct_9 on plan plus")])
    assert content_of(chunks) == "partial"
    assert chunks[-1] == {
        "error": {
            "message": "upstream request failed",
            "type": "server_error",
            "code": "server_error",
            "param": None,
        }
    }
    assert translator.done and not translator.send_done
    assert translator.feed({"type": "response.completed", "response": {}}) == []


def test_failure_before_output_leaves_the_client_untouched() -> None:
    translator, chunks = run(
        [upstream_events([])[0], failed_event("context_length_exceeded", "Too long.")]
    )
    assert not translator.started and translator.failure is not None
    assert [set(chunk) for chunk in chunks] == [{"error"}]  # no role chunk went out
    error = translator.failure.to_error()
    assert (error.status, error.code, error.message) == (
        400,
        "context_length_exceeded",
        "Too long.",
    )
    _, other = run([failed_event("weird code with spaces", "x")])
    assert other[0]["error"]["code"] == "upstream_error"
    with pytest.raises(UpstreamError) as caught:
        collect_chat_completion([failed_event("rate_limit_exceeded", "x")], model="m")
    assert (caught.value.status, caught.value.code) == (502, "rate_limit_exceeded")


def test_error_event_and_abort() -> None:
    events = upstream_events([("text", ["a", "b"])])[:-1]
    _, chunks = run([*events, {"type": "error", "code": "server_is_overloaded", "message": "busy"}])
    assert chunks[-1]["error"]["code"] == "server_is_overloaded"
    translator, _ = run(events)
    payload = translator.abort("upstream_stream_closed", "the upstream stream ended early")
    assert payload[0]["error"]["code"] == "upstream_stream_closed"
    assert translator.abort("again", "x") == [] and not translator.send_done
    with pytest.raises(UpstreamError) as caught:
        collect_chat_completion(events, model="m")
    assert caught.value.code == "upstream_stream_closed"


def test_codex_only_and_reasoning_events_produce_nothing() -> None:
    translator = ChatStreamTranslator(model="m")
    assert translator.feed({"type": "codex.rate_limits", "rate_limits": {}}) == []
    assert translator.feed({"type": "response.reasoning_summary_text.delta", "delta": "hm"}) == []
    assert not translator.started


# --- through the real OpenAI SDK ------------------------------------------------------


def sdk_client(body: bytes) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content=body, headers=headers)

    transport = httpx.MockTransport(handler)
    return openai.OpenAI(
        api_key="k",
        base_url="http://gw/v1",
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    )


def sse(chunks: list[dict[str, Any]], *, done: bool) -> bytes:
    return b"".join(encode_chunk(c) for c in chunks) + (DONE_EVENT if done else b"")


def test_openai_sdk_reads_the_stream_and_accumulates_tool_calls() -> None:
    outputs: list[Output] = [("text", ["Hi ", "there"]), ("call", "f", ['{"a"', ":1}"])]
    translator, chunks = run(upstream_events(outputs), include_usage=True)
    client = sdk_client(sse(chunks, done=translator.send_done))
    with client.chat.completions.stream(
        model="gpt-5.5", messages=[{"role": "user", "content": "x"}]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Hi there"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == '{"a":1}'
    assert final.usage is not None and final.usage.completion_tokens_details is not None
    assert final.usage.completion_tokens_details.reasoning_tokens == 3


def test_openai_sdk_raises_on_the_error_payload() -> None:
    events = upstream_events([("text", ["partial"])])[:-1]
    translator, chunks = run([*events, failed_event("server_error", "x")])
    client = sdk_client(sse(chunks, done=translator.send_done))
    stream = client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="upstream request failed"):
        for _ in stream:
            pass
