"""SSE framing: exact raw blocks, every line ending, any chunking (pooler.protocol.sse)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.protocol.sse import SSEDecoder, SSEEvent, encode_sse

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_event_names = st.none() | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


def decode_in_pieces(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    """Feed `stream` cut at `cuts`, checking after each piece that every event complete
    in the bytes so far has come out (nothing waits for the next chunk)."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += decoder.feed(stream[start:cut])
        assert events == SSEDecoder().feed(stream[:cut])
        start = cut
    return events + decoder.flush()


def normalized(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


def test_codex_stream_one_event_per_block() -> None:
    stream = (
        b'event: response.created\ndata: {"type":"response.created"}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"}\n\n'
    )
    events = SSEDecoder().feed(stream)
    assert [e.event for e in events] == ["response.created", "response.output_text.delta"]
    assert events[0].data == '{"type":"response.created"}'
    assert events[1].data_bytes == b'{"type":"response.output_text.delta"}'
    assert b"".join(e.raw for e in events) == stream


def test_event_waits_for_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\ndata: 1\n") == []
    assert decoder.feed(b"data: 2") == []
    (event,) = decoder.feed(b"\n\ndata: next")
    assert event == SSEEvent(b"event: a\ndata: 1\ndata: 2\n\n", "a", b"1\n2")
    assert decoder.flush() == [SSEEvent(b"data: next", None, b"next")]
    assert decoder.flush() == []


def test_comments_fields_and_empty_blocks_are_kept_raw() -> None:
    stream = b": keep-alive\n\nid: 7\nretry: 10\nevent:\ndata\nbogus: x\n\n\n"
    events = SSEDecoder().feed(stream)
    assert [(e.event, e.data) for e in events] == [(None, ""), (None, ""), (None, "")]
    assert [e.raw for e in events] == [b": keep-alive\n\n", stream[14:-1], b"\n"]


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(eol: bytes) -> None:
    stream = b"event: e" + eol + b"data:  two spaces" + eol + eol + b"data: z" + eol + eol
    events = decode_in_pieces(stream, list(range(len(stream))))
    assert [(e.event, e.data) for e in events] == [("e", " two spaces"), (None, "z")]
    second = stream.index(b"data: z")
    assert [e.raw for e in events] == [stream[:second], stream[second:]]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n\r") == []  # CR, or the first half of CRLF?
    (event,) = decoder.feed(b"\ndata: b\r\n\r")
    assert event == SSEEvent(b"data: a\r\n\r\n", None, b"a")
    assert decoder.flush() == [SSEEvent(b"data: b\r\n\r", None, b"b")]


def test_lone_cr_at_end_of_stream_ends_the_block() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == []
    assert decoder.flush() == [SSEEvent(b"data: a\r\r", None, b"a")]


def test_large_event_in_small_chunks() -> None:
    payload = b"x" * 200_000
    stream = b"data: " + payload + b"\n\n"
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for i in range(0, len(stream), 1000):
        events += decoder.feed(stream[i : i + 1000])
    assert [e.data_bytes for e in events] == [payload]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    (event,) = SSEDecoder().feed(b"event: \xff\ndata: \xfe\n\n")
    assert event.event == "\ufffd" and event.data == "\ufffd"


def test_encode_sse() -> None:
    assert encode_sse('{"a":1}', "x") == b'event: x\ndata: {"a":1}\n\n'
    assert encode_sse(b"one\ntwo\r\nthree") == b"data: one\ndata: two\ndata: three\n\n"
    assert encode_sse("") == b"data: \n\n"
    with pytest.raises(ValueError):
        encode_sse("x", "bad\nname")


@given(
    items=st.lists(st.tuples(_text, _event_names), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_encoded_events_survive_any_chunking(
    items: list[tuple[str, str | None]], cuts: list[int]
) -> None:
    blocks = [encode_sse(data, event) for data, event in items]
    stream = b"".join(blocks)
    events = decode_in_pieces(stream, [c % (len(stream) + 1) for c in cuts])
    assert [e.raw for e in events] == blocks
    assert [(e.event, e.data) for e in events] == [(ev, normalized(d)) for d, ev in items]


@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["data: ", "data:", "event: ", ": ", "id: ", ""]), _text, _eol),
        max_size=20,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_line_endings_any_chunking(
    lines: list[tuple[str, str, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(
        (field + value.replace("\r", "").replace("\n", "")).encode() + eol
        for field, value, eol in lines
    )
    whole = SSEDecoder()
    expected = whole.feed(stream) + whole.flush()
    events = decode_in_pieces(stream, [c % (len(stream) + 1) for c in cuts])
    assert events == expected
    assert b"".join(e.raw for e in events) == stream


@given(
    stream=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_arbitrary_bytes_never_lost_or_reordered(stream: bytes, cuts: list[int]) -> None:
    whole = SSEDecoder()
    expected = whole.feed(stream) + whole.flush()
    events = decode_in_pieces(stream, [c % (len(stream) + 1) for c in cuts])
    assert events == expected
    assert b"".join(e.raw for e in events) == stream
