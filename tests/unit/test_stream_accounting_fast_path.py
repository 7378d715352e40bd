"""Stream accounting's whole-chunk fast path (pooler.protocol.stream_accounting `feed`,
issue 17): whole Codex-shaped events none of which is parsed (text deltas) are counted
in `feed`'s own loop, not framed one by one; whatever the chunking and the bytes, the
accounting ends exactly as the exact path (the SSE decoder, then each event alone)
leaves it. Real streams from the emulator, cut at every byte, and hostile variants."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from types import FrameType, SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pooler.emulator.events import Turn, build_events
from pooler.emulator.replies import TextReply
from pooler.protocol import stream_accounting
from pooler.protocol.stream_accounting import StreamAccounting


class ExactAccounting(StreamAccounting):
    """The accounting as it read every chunk before the fast path: frame, then each event."""

    def feed(self, chunk: bytes) -> None:
        for data in self._decoder.feed_data(chunk):
            self._on_event(data)


@contextmanager
def fixed_clock() -> Iterator[None]:
    """Rate-limit snapshots carry the time they were read: the same for both readers."""
    with mock.patch.object(stream_accounting, "time", SimpleNamespace(time=lambda: 1.7e9)):
        yield


def state(accounting: StreamAccounting) -> tuple[Any, ...]:
    return (
        accounting.terminal_type,
        accounting.response,
        accounting.usage,
        accounting.rate_limits,
        accounting.error_code,
        accounting.output_items,
        accounting.response_id,
        accounting.events,
        bytes(accounting._decoder.held),
    )


def rate_limits_event() -> dict[str, Any]:
    window = {"used_percent": 12.5, "window_minutes": 300, "reset_at": 1_700_000_000}
    return {
        "type": "codex.rate_limits",
        "plan_type": "plus",
        "rate_limits": {"allowed": True, "limit_reached": False, "primary": window},
    }


def sse(event: dict[str, Any], *, data: bytes = b"data: ", eol: bytes = b"\n") -> bytes:
    """One block as the emulator (and the Codex backend) writes it, or a variant."""
    payload = json.dumps(event, separators=(",", ":")).encode()
    return b"event: " + event["type"].encode() + eol + data + payload + eol + eol


def emulator_events(text: str, deltas: int = 20) -> list[dict[str, Any]]:
    """A real text answer: 20 deltas make its 28 events (plus a rate-limit event first)."""
    turn = Turn("resp_fast1", "gpt-5.4", 1_700_000_000, 45, cached_tokens=3, deltas=deltas)
    return [rate_limits_event(), *build_events(TextReply(text), turn)]


TEXT = "The quick brown fox jumps over the lazy dog, again and again. " * 2


def real_chunks() -> list[bytes]:
    return [sse(e) for e in emulator_events(TEXT)]


def both(chunks: list[bytes], collect: bool = True) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    fast, exact = StreamAccounting(collect_output=collect), ExactAccounting(collect_output=collect)
    with fixed_clock():
        for chunk in chunks:
            fast.feed(chunk)
            exact.feed(chunk)
            assert state(fast) == state(exact)
    return state(fast), state(exact)


def test_a_real_stream_as_the_emulator_sends_it() -> None:
    chunks = real_chunks()
    assert len(chunks) == 29  # the rate-limit event and the answer's 28
    fast, exact = both(chunks)
    assert fast == exact
    assert fast[0] == "response.completed" and fast[6] == "resp_fast1" and fast[7] == 29
    assert fast[2] is not None and fast[3] is not None and fast[5]


def test_every_event_split_at_every_byte() -> None:
    """One event cut in two across reads, at each of its bytes, the others whole."""
    chunks = real_chunks()
    for index, chunk in enumerate(chunks):
        for cut in range(1, len(chunk)):
            pieces = [*chunks[:index], chunk[:cut], chunk[cut:], *chunks[index + 1 :]]
            fast, exact = both(pieces)
            assert fast == exact, (index, cut)


def test_the_whole_stream_cut_once_at_every_byte() -> None:
    stream = b"".join(real_chunks())
    for cut in range(len(stream) + 1):
        fast, exact = both([stream[:cut], stream[cut:]], collect=cut % 2 == 0)
        assert fast == exact, cut


def hostile_streams() -> dict[str, bytes]:
    events = emulator_events(TEXT)
    nasty = 'NUL \x00 bell \x07 esc \x1b quote " slash \\ é 漢 response.completed \u2028'
    return {
        "crlf": b"".join(sse(e, eol=b"\r\n") for e in events),
        "cr": b"".join(sse(e, eol=b"\r") for e in events),
        "no_space": b"".join(sse(e, data=b"data:") for e in events),
        "controls": b"".join(sse(e) for e in emulator_events(nasty)),
        "huge": b"".join(sse(e) for e in emulator_events("x" * 300_000, deltas=3)),
        "lone_lfs": b"\n".join(sse(e) for e in events) + b"\n\n\n",
        "escaped_type": b"".join(
            sse(e).replace(b'"type":"response.', b'"type":"response\\u002e') for e in events
        ),
        "comments": b"".join(b": keep-alive\n\n" + sse(e) for e in events),
    }


@pytest.mark.parametrize("name", sorted(hostile_streams()))
def test_hostile_streams_read_as_before(name: str) -> None:
    stream = hostile_streams()[name]
    blocks = [b + b"\n\n" for b in stream.split(b"\n\n") if b] or [stream]
    for chunks in ([stream], blocks, [stream[i : i + 97] for i in range(0, len(stream), 97)]):
        fast, exact = both(chunks)
        assert fast == exact


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(set(hostile_streams()) - {"huge"})),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
)
def test_hostile_streams_cut_anywhere(name: str, cuts: list[int]) -> None:
    stream = hostile_streams()[name]
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in pairwise(points)]
    fast, exact = both(chunks)
    assert fast == exact


def test_a_relayed_delta_costs_one_python_call() -> None:
    """Regression (issue 17): a chunk holding a text delta (most of a stream's reads) is
    accounted in `feed` itself: no framing, event or type-check function per event. Before:
    seven Python calls per delta (`feed_data`, `_take`, `_data_lf`, `_keep`, `_on_event`,
    `_unparsed_type` besides `feed`). Counted, not timed."""
    chunks = real_chunks()
    deltas = [c for c in chunks if c.startswith(b"event: response.output_text.delta\n")]
    assert len(deltas) == 20
    accounting = StreamAccounting()
    with fixed_clock():
        for chunk in chunks[:5]:  # up to the first delta
            accounting.feed(chunk)
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        for chunk in deltas:
            accounting.feed(chunk)
    finally:
        sys.setprofile(None)
    assert accounting.events == 5 + 20
    assert calls / len(deltas) <= 1, calls
