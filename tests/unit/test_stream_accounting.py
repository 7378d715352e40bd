"""Stream accounting reads a Codex SSE stream as before, with less work per event
(pooler.protocol.stream_accounting, pooler.protocol.sse): `feed_data` gives the data
`feed` would (a Codex-shaped block's data sliced out in place), and an event whose type
is not accounted for is counted without a JSON parse."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.protocol.sse import SSEDecoder
from pooler.protocol.stream_accounting import StreamAccounting

_text = st.text(st.characters(codec="utf-8"), max_size=30)
_eol = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])
_fields = st.sampled_from(["data: ", "data:", "event: ", "event:", ": ", "id: ", ""])


@pytest.mark.parametrize(
    "raw",
    [
        b'event: response.created\ndata: {"a":1}\n\n',
        b"event: \ndata: x\n\n",
        b"event: a:b\ndata: c: d\n\n",
        b"event: a\ndata: x\ndata: y\n\n",  # two data lines: joined by LF
        b"event: a\ndata:x\n\n",
        b"event: a\n\n",  # no data
        b"event: a\ndata: x\n",  # not ended yet
        b"data: x\nevent: a\n\n",
        b"event: a\ndata: x\r\n\r\n",
        b"event: \xff\ndata: \xfe\n\n",
    ],
)
def test_codex_shaped_blocks_and_their_neighbours(raw: bytes) -> None:
    assert SSEDecoder().feed_data(raw) == [e.data_bytes for e in SSEDecoder().feed(raw)]


@given(
    lines=st.lists(st.tuples(_fields, _text, _eol), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_feed_data_gives_what_feed_gives(
    lines: list[tuple[str, str, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(
        (field + value.replace("\r", "").replace("\n", "")).encode() + eol
        for field, value, eol in lines
    )
    events, datas = SSEDecoder(), SSEDecoder()
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        piece = stream[start:cut]
        assert datas.feed_data(piece) == [e.data_bytes for e in events.feed(piece)]
        start = cut


def codex_stream(text: str = "Hello.") -> bytes:
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    done_item = {**item, "content": [{"type": "output_text", "text": text}]}
    usage = {
        "input_tokens": 45,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 8,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 53,
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_1", "part": {}},
        {"type": "response.output_text.delta", "item_id": "msg_1", "delta": text},
        {"type": "response.output_text.done", "item_id": "msg_1", "text": text},
        {"type": "response.content_part.done", "item_id": "msg_1", "part": {}},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": {**response, "status": "completed", "usage": usage},
        },
    ]
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def test_only_accounted_events_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes | str] = []
    real_loads = orjson.loads

    def loads(data: bytes | str) -> Any:
        parsed.append(data)
        return real_loads(data)

    monkeypatch.setattr(orjson, "loads", loads)
    accounting = StreamAccounting(collect_output=True)
    stream = codex_stream()
    for at in range(0, len(stream), 700):
        accounting.feed(stream[at : at + 700])
    types = [json.loads(data)["type"] for data in parsed]
    assert types == ["response.created", "response.output_item.done", "response.completed"]
    assert accounting.events == 9
    assert accounting.completed and accounting.response_id == "resp_1"
    assert accounting.usage is not None and accounting.usage.total_tokens == 53
    assert accounting.assembled_response()["output"][0]["content"][0]["text"] == "Hello."


def test_escaped_or_spaced_types_are_still_read() -> None:
    accounting = StreamAccounting()
    accounting.feed(b'data: {"type": "response.created","response":{"id":"resp_a"}}\n\n')
    assert accounting.response_id == "resp_a"
    accounting.feed(b'data: {"type":"response.complete\\u0064","response":{}}\n\n')
    assert accounting.completed


def test_invalid_utf8_in_an_accounted_event_still_counts() -> None:
    accounting = StreamAccounting()
    accounting.feed(
        b'event: response.completed\ndata: {"type":"response.completed","response":'
        b'{"id":"resp_b","output":[{"text":"\xff"}],"usage":{"input_tokens":1,'
        b'"output_tokens":2}}}\n\n'
    )
    assert accounting.completed
    assert accounting.response is not None
    assert accounting.response["output"][0]["text"] == "\ufffd"
    assert accounting.usage is not None and accounting.usage.total_tokens == 3


def test_websocket_frames_as_text() -> None:
    accounting = StreamAccounting()
    accounting._on_event('{"type":"response.in_progress","response":{"id":"resp_c"}}')
    accounting._on_event('{"type":"response.created","response":{"id":"resp_c"}}')
    accounting._on_event('{"type":"response.failed","response":{"error":{"code":"x"}}}')
    assert accounting.response_id == "resp_c"
    assert accounting.terminal_type == "response.failed" and accounting.error_code == "x"
    assert accounting.events == 3
