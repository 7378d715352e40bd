"""Public /v1/responses ↔ Codex Responses (pooler/translate/responses_*)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import Response

from pooler.emulator.events import Turn, build_events
from pooler.emulator.replies import TextReply, ToolCallReply
from pooler.errors import BadRequest, UnsupportedParameter, UpstreamError
from pooler.translate import (
    collect_response,
    is_public_event_type,
    normalize_responses_request,
    public_event,
    public_response,
)

TURN = Turn(response_id="resp_r1", model="gpt-5.5", created_at=1_700_000_000, input_tokens=50)


def responses(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "input": "hi", **fields}


def message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def codex_like(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The emulator's events with `response.completed.output` emptied, as the real backend
    sends it (protocol §4.1): the output must be rebuilt from `output_item.done`."""
    last = events[-1]
    return [*events[:-1], {**last, "response": {**last["response"], "output": []}}]


# --- requests -------------------------------------------------------------------------


def test_string_input_becomes_one_user_message_and_upstream_always_streams() -> None:
    request = normalize_responses_request(responses(stream=False, store=True))
    assert request.body == {
        "model": "gpt-5.5",
        "input": [message("user", "hi")],
        "store": False,
        "stream": True,
    }
    assert (request.client_stream, request.model, request.dropped) == (False, "gpt-5.5", ())
    assert normalize_responses_request(responses(stream=True)).client_stream


def test_system_messages_are_lifted_or_turned_into_developer() -> None:
    body = responses(
        instructions="Base.",
        input=[
            {"role": "system", "content": "Sys one."},
            message("system", "Sys two."),
            {"role": "developer", "content": "Dev."},
            {"role": "user", "content": "Q"},
            {"role": "system", "content": "Late."},
            {"type": "function_call_output", "call_id": "c1", "output": "x"},
        ],
    )
    upstream = normalize_responses_request(body).body
    assert upstream["instructions"] == "Base.\n\nSys one.\n\nSys two."
    assert upstream["input"] == [
        message("developer", "Dev."),
        message("user", "Q"),
        message("developer", "Late."),
        {"type": "function_call_output", "call_id": "c1", "output": "x"},
    ]


def test_forwarded_fields_pass_through() -> None:
    fields = {
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        "prompt_cache_key": "conv-1",
        "previous_response_id": "resp_0",
        "client_metadata": {"x-emulator-events": "3"},
        "service_tier": "priority",
    }
    upstream = normalize_responses_request(responses(**fields)).body
    assert {key: upstream[key] for key in fields} == fields


@pytest.mark.parametrize(
    ("fields", "dropped"),
    [
        ({"max_output_tokens": 64}, ("max_output_tokens",)),
        (
            {"temperature": 1, "top_p": 0.5, "metadata": {"a": "b"}},
            ("temperature", "top_p", "metadata"),
        ),
        ({"truncation": "disabled", "background": False}, ("truncation", "background")),
        (
            {"stream_options": {"include_obfuscation": False}, "user": "u"},
            ("user", "stream_options"),
        ),
    ],
)
def test_backend_rejected_fields_are_dropped(
    fields: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    request = normalize_responses_request(responses(**fields))
    assert request.dropped == dropped
    assert not set(fields) & set(request.body)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unsupported_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        normalize_responses_request(responses(**fields))
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "unsupported_parameter",
        param,
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": None}, "model"),
        ({"input": 3}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": ["loose string"]}, "input[0]"),
        ({"max_output_tokens": -1}, "max_output_tokens"),
        ({"tool_choice": "maybe"}, "tool_choice"),
        ({"include": [1]}, "include[0]"),
        ({"stream": 1}, "stream"),
        ({"service_tier": "ultrafast"}, "service_tier"),
    ],
)
def test_malformed_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize_responses_request(responses(**fields))
    assert not isinstance(caught.value, UnsupportedParameter)
    assert caught.value.param == param


_roles = st.sampled_from(["user", "assistant", "developer", "system"])
_other_items = st.builds(
    lambda i, out: {"type": "function_call_output", "call_id": f"call_{i}", "output": out},
    st.integers(0, 99),
    st.text(max_size=8),
)
_messages = st.builds(lambda r, t: {"role": r, "content": t}, _roles, st.text(max_size=8))


@given(st.lists(st.one_of(_messages, _other_items), max_size=10))
def test_input_order_is_kept_and_no_system_item_goes_upstream(items: list[dict[str, Any]]) -> None:
    upstream = normalize_responses_request(responses(input=items)).body
    leading = 0
    while leading < len(items) and items[leading].get("role") == "system":
        leading += 1
    rest = items[leading:]
    assert len(upstream["input"]) == len(rest)
    for sent, original in zip(upstream["input"], rest, strict=True):
        if "role" in original:
            role = "developer" if original["role"] == "system" else original["role"]
            assert (sent["type"], sent["role"]) == ("message", role)
            assert sent["content"][0]["text"] == original["content"]
        else:
            assert sent == original
    lifted = "\n\n".join(item["content"] for item in items[:leading] if item["content"])
    assert upstream.get("instructions", "") == lifted


# --- responses ------------------------------------------------------------------------


def test_codex_only_events_are_hidden() -> None:
    assert not is_public_event_type("codex.rate_limits")
    assert not is_public_event_type("response.metadata")
    assert is_public_event_type("response.output_text.delta")
    assert public_event({"type": "codex.rate_limits", "rate_limits": {}}) is None
    events = build_events(TextReply("hello"), TURN)
    for event in events[:-1]:
        assert public_event(event) == event
    completed = public_event(events[-1])
    assert completed is not None
    assert completed["response"]["usage"]["input_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert {**completed["response"], "usage": None} == {**events[-1]["response"], "usage": None}


def test_failed_events_are_sanitized() -> None:
    error = {"code": "usage_limit_reached", "message": "acct 42 (plus) is out", "plan_type": "plus"}
    event = {
        "type": "response.failed",
        "sequence_number": 9,
        "response": {"id": "resp_1", "status": "failed", "error": error},
    }
    public = public_event(event)
    assert public is not None
    assert public["response"]["error"] == {
        "code": "usage_limit_reached",
        "message": "upstream request failed",
    }
    assert public["sequence_number"] == 9
    error_event = public_event(
        {"type": "error", "code": "context_length_exceeded", "message": "Too long"}
    )
    assert error_event == {
        "type": "error",
        "code": "context_length_exceeded",
        "message": "Too long",
        "param": None,
    }


@pytest.mark.parametrize(
    "reply", [TextReply("Hello from the emulator."), ToolCallReply("shell", '{"cmd":"ls"}')]
)
def test_collected_response_rebuilds_output_and_validates(reply: TextReply | ToolCallReply) -> None:
    events = build_events(reply, TURN)
    expected = events[-1]["response"]["output"]
    response = public_response(collect_response(codex_like(events)))
    assert response["output"] == expected
    assert (response["id"], response["status"], response["object"]) == (
        "resp_r1",
        "completed",
        "response",
    )
    assert response["usage"]["input_tokens"] == 50
    parsed = Response.model_validate(response)
    if isinstance(reply, TextReply):
        assert parsed.output_text == reply.text


def test_collection_failures() -> None:
    created = build_events(TextReply("x"), TURN)[0]
    failed = {
        "type": "response.failed",
        "response": {
            "id": "resp_r1",
            "status": "failed",
            "error": {"code": "server_error", "message": "boom"},
        },
    }
    with pytest.raises(UpstreamError) as caught:
        public_response(collect_response([created, failed]))
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        502,
        "server_error",
        "upstream request failed",
    )
    with pytest.raises(UpstreamError) as closed:
        collect_response([created])
    assert closed.value.code == "upstream_stream_closed"
    with pytest.raises(BadRequest):
        collect_response(
            [created, {"type": "error", "code": "context_length_exceeded", "message": "long"}]
        )


def test_incomplete_response_is_answered_as_is() -> None:
    events = build_events(TextReply("cut"), TURN)
    last = events[-1]
    details = {"reason": "max_output_tokens"}
    incomplete = {
        "type": "response.incomplete",
        "response": {**last["response"], "status": "incomplete", "incomplete_details": details},
    }
    response = public_response(collect_response([*events[:-1], incomplete]))
    assert response["status"] == "incomplete" and response["incomplete_details"] == details
