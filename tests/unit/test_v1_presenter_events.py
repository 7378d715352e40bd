"""How a `/v1` presenter reads the upstream's events (pooler.web.openai_v1.presenters): each
event's data as bytes from `SSEDecoder.feed_data`, with no `SSEEvent` and no str per event
(issue 17), and the same events as before: `[DONE]` and non-objects skipped, invalid UTF-8
read as U+FFFD."""

from __future__ import annotations

import cProfile
import pstats

import orjson

from pooler.protocol.sse import SSEDecoder
from pooler.web.openai_v1.presenters import ChatPresenter, ResponsesPresenter, _events


def sse(data: bytes, event: str = "message") -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def test_events_are_the_data_objects_in_order() -> None:
    stream = b"".join(
        [
            sse(b'{"type":"a","n":1}'),
            sse(b"[DONE]"),
            sse(b"[1,2]"),
            sse(b"not json"),
            b": a comment\n\n",
            sse(b'{"type":"b","text":"\xff"}'),
            b'data: {"type":"c",\ndata: "n":3}\n\n',
            b'data: {"type":"d"}\r\n\r\n',
        ]
    )
    decoder = SSEDecoder()
    found = [e for at in range(0, len(stream), 7) for e in _events(decoder, stream[at : at + 7])]
    assert found == [
        {"type": "a", "n": 1},
        {"type": "b", "text": "\ufffd"},
        {"type": "c", "n": 3},
        {"type": "d"},
    ]


def test_presenters_read_data_without_an_event_object_each() -> None:
    created = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
    delta = {"type": "response.output_text.delta", "item_id": "m", "delta": "Hi"}
    stream = sse(orjson.dumps(created)) + sse(orjson.dumps(delta)) * 5
    profile = cProfile.Profile()
    profile.enable()
    chat = ChatPresenter("gpt-5.5", include_usage=False).translate(stream)
    public = ResponsesPresenter().translate(stream)
    profile.disable()
    assert chat.count(b'"content":"Hi"') == 5
    assert public.count(b"response.output_text.delta") == 10  # event line + data
    called = {(path.rsplit("/", 1)[-1], name) for path, _, name in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert ("sse.py", "data") not in called  # no str decode per event
    assert ("sse.py", "_parse_block") not in called  # Codex-shaped blocks read in place
