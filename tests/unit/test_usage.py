"""Token usage of completed responses and the fast event-type probe (protocol §4.1)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pooler.protocol.usage import TokenUsage, classify_event_type, usage_from_completed


def test_usage_from_completed_reads_every_count() -> None:
    event = {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "usage": {
                "input_tokens": 1200,
                "input_tokens_details": {"cached_tokens": 1000},
                "output_tokens": 300,
                "output_tokens_details": {"reasoning_tokens": 128},
                "total_tokens": 1500,
            },
        },
    }
    assert usage_from_completed(event) == TokenUsage(1200, 1000, 300, 128, 1500)


def test_usage_tolerates_missing_details_and_garbage() -> None:
    event = {
        "response": {
            "usage": {
                "input_tokens": 10,
                "input_tokens_details": None,
                "output_tokens": 5.0,
                "output_tokens_details": {"reasoning_tokens": "many"},
                "total_tokens": -1,
            }
        }
    }
    assert usage_from_completed(event) == TokenUsage(10, 0, 5, 0, 15)
    garbage = {"response": {"usage": {"input_tokens": True, "output_tokens": [1]}}}
    assert usage_from_completed(garbage) == TokenUsage(0, 0, 0, 0, 0)


def test_no_usage_object_is_none() -> None:
    assert usage_from_completed({"type": "response.completed", "response": {}}) is None
    assert usage_from_completed({"response": {"usage": None}}) is None
    assert usage_from_completed({"response": "x"}) is None
    assert usage_from_completed({}) is None


def test_classify_common_shapes() -> None:
    assert classify_event_type(b'{"type":"response.completed","response":{}}') == (
        b"response.completed"
    )
    assert classify_event_type(b'{"type": "codex.rate_limits", "plan_type": "plus"}') == (
        b"codex.rate_limits"
    )
    assert classify_event_type(b'{"sequence_number":1,"type":"response.created"}') == (
        b"response.created"
    )
    assert classify_event_type(b'{"type":"a\\"b","x":1}') == b'a"b'


def test_classify_rejects_what_is_not_a_typed_object() -> None:
    for data in (b"[DONE]", b"", b"{}", b'{"type":1}', b"[1]", b'"type"', b'{"type":"x"'):
        assert classify_event_type(data) is None, data
    assert classify_event_type(b'{"type":"\\ud800"}') is None


_text = st.text(st.characters(blacklist_categories=("Cs",)))  # valid UTF-8 once encoded
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_type_values = _text | st.sampled_from(["response.completed", "response.output_item.done"])


@given(
    kind=_type_values | _json,
    rest=st.dictionaries(_text.filter(lambda k: k != "type"), _json, max_size=4),
    type_first=st.booleans(),
    compact=st.booleans(),
    ascii_only=st.booleans(),
)
def test_classify_agrees_with_json_loads(
    kind: object, rest: dict[str, object], type_first: bool, compact: bool, ascii_only: bool
) -> None:
    payload = {"type": kind, **rest} if type_first else {**rest, "type": kind}
    separators = (",", ":") if compact else (", ", ": ")
    data = json.dumps(payload, separators=separators, ensure_ascii=ascii_only).encode()
    expected = kind.encode() if isinstance(kind, str) else None
    assert classify_event_type(data) == expected


@given(st.binary(max_size=200))
def test_classify_never_raises(data: bytes) -> None:
    result = classify_event_type(data)
    assert result is None or isinstance(result, bytes)
