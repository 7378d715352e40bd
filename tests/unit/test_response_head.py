"""pooler.response_head: a response of known length leaves in one write, head and body
together; a streamed one (no Content-Length) still sends its head at once. Driven through
Hypercorn's own `H11Protocol._send_h11_event`, as patched, with a recording `send`."""

from __future__ import annotations

from typing import Any

import h11
import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol

from pooler.response_head import coalesce_fixed_length_heads


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def __call__(self, event: Any) -> None:
        assert isinstance(event, RawData)
        self.writes.append(event.data)


def protocol_after_a_request(method: bytes = b"GET") -> tuple[Any, Recorder]:
    """An H11Protocol whose connection has read one request (so it may answer it)."""
    coalesce_fixed_length_heads()
    proto: Any = H11Protocol.__new__(H11Protocol)
    proto.connection = h11.Connection(h11.SERVER)
    proto.connection.receive_data(method + b" / HTTP/1.1\r\nhost: x\r\n\r\n")
    while type(proto.connection.next_event()) is not h11.EndOfMessage:
        pass
    proto.send = Recorder()
    return proto, proto.send


async def answer(proto: Any, headers: list[tuple[bytes, bytes]], *parts: bytes) -> None:
    await proto._send_h11_event(h11.Response(status_code=200, headers=headers))
    for part in parts:
        await proto._send_h11_event(h11.Data(data=part))
    await proto._send_h11_event(h11.EndOfMessage())


def test_a_json_answer_is_one_write_with_its_head() -> None:
    proto, sent = protocol_after_a_request()
    trio.run(answer, proto, [(b"content-length", b"11")], b'{"ok":true}')
    [whole] = [w for w in sent.writes if w]  # the end of a fixed-length body is empty
    head, _, body = whole.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"ok":true}'


def test_a_body_less_answer_sends_its_head_at_its_end() -> None:
    proto, sent = protocol_after_a_request(b"HEAD")
    trio.run(answer, proto, [(b"content-length", b"11")])
    [head] = [w for w in sent.writes if w]
    assert head.startswith(b"HTTP/1.1 200")


def test_a_streamed_answer_sends_its_head_at_once() -> None:
    proto, sent = protocol_after_a_request()

    async def start_only() -> None:
        await proto._send_h11_event(
            h11.Response(status_code=200, headers=[(b"content-type", b"text/event-stream")])
        )

    trio.run(start_only)
    assert len(sent.writes) == 1 and sent.writes[0].startswith(b"HTTP/1.1 200")
    trio.run(proto._send_h11_event, h11.Data(data=b"data: 1\n\n"))
    assert len(sent.writes) == 2  # each event in its own write, as before
