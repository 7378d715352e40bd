"""The body sent upstream for a non-streaming client keeps the client's bytes where it can."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pooler.protocol.responses_request import streaming_body

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=6).filter(lambda k: k != "stream"), values, max_size=5),
    st.booleans(),
)
def test_the_stream_key_is_added_in_front_and_the_rest_is_untouched(
    payload: dict[str, Any], spaced: bool
) -> None:
    payload = {"model": "gpt-5.5", **payload}
    body = json.dumps(payload, indent=2 if spaced else None).encode()
    out = streaming_body(body, orjson.loads(body))
    assert json.loads(out) == {**payload, "stream": True}  # exact integers (orjson: int64)
    assert out.endswith(body[1:])  # every byte after the brace is the client's


def test_an_explicit_false_is_rewritten() -> None:
    body = b'{"model":"m","stream":false}'
    assert orjson.loads(streaming_body(body, orjson.loads(body)))["stream"] is True
