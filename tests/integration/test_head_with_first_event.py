"""Through the whole stack: a streamed answer whose first upstream piece is already at hand
when the relay answers its client goes out in ONE write with the head (issue 17: SSE time
to first byte; before, the head was one write and the first event another): the Codex
route, `/v1/responses` (its presenter's translation of that piece) and an opaque relay.

The gateway's writes are recorded at the server protocol (`Http1Protocol._write` and its
`raw_send`, the emulator's own filtered out by port). So that the first event is at hand
whatever the machine's timing, the gateway's read of the upstream head is made to return
only once the socket also holds the body's first bytes (the emulator sends them right
after its head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from harness import open_stack, parse_sse, responses_body

from pooler.http_server.protocol import Http1Protocol
from pooler.upstream import http1


def first_write_after_head(writes: list[bytes]) -> bytes:
    """The body bytes that went out in the same write as the answer's head."""
    (head_write,) = [w for w in writes if w.startswith(b"HTTP/1.1 200 ")]
    return head_write.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def first_event_at_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    read_head = http1.UpstreamPool._read_head

    async def _read_head(self: Any, conn: Any, parsed: Any) -> Any:
        response = await read_head(self, conn, parsed)
        if response.status == 200 and not parsed.body and conn.plain is not None:
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(conn.plain)
        return response

    monkeypatch.setattr(http1.UpstreamPool, "_read_head", _read_head)


async def test_the_first_event_goes_out_with_the_head(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_event_at_hand: None
) -> None:
    writes: dict[int, list[bytes]] = {}
    write = Http1Protocol._write

    async def recorded(self: Http1Protocol, data: bytes) -> None:
        assert self.server is not None
        writes.setdefault(self.server[1], []).append(bytes(data))
        await write(self, data)

    monkeypatch.setattr(Http1Protocol, "_write", recorded)
    # The writes made without a yield after them (`PieceWriter`, a WAIT_FOLLOWS head) go
    # through the protocol's `raw_send`: recorded too.
    init = Http1Protocol.__init__

    def recording_init(self: Http1Protocol, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        raw = self.raw_send
        if raw is None:
            return

        async def raw_send(data: bytes) -> bool:
            assert self.server is not None
            writes.setdefault(self.server[1], []).append(bytes(data))
            return await raw(data)

        self.raw_send = raw_send

    monkeypatch.setattr(Http1Protocol, "__init__", recording_init)
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        port = urlsplit(stack.url).port
        assert port is not None
        with trio.fail_after(30):
            answers = {}
            for path, body in [
                ("/backend-api/codex/responses", responses_body("Reply with exactly: one")),
                ("/v1/responses", {**responses_body("Reply with exactly: two"), "stream": True}),
            ]:
                writes.clear()
                answer = await client.post(path, json=body)
                assert answer.status_code == 200, answer.text
                answers[path] = (answer, writes.get(port, []))
            writes.clear()  # an opaque relay (pooler.web.backend_codex.relay) as well
            files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
            transcribed = await client.post("/backend-api/transcribe", files=files)
            assert transcribed.status_code == 200, transcribed.text
            transcribe_writes = writes.get(port, [])
    codex, codex_writes = answers["/backend-api/codex/responses"]
    events = parse_sse(codex.text)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    delta = "response.output_text.delta"
    assert "".join(e["delta"] for e in events if e["type"] == delta) == "one"
    first = first_write_after_head(codex_writes)
    assert b"event: response.created" in first  # chunk-framed, behind the head
    assert first.startswith(b"%x\r\n" % (len(first.split(b"\r\n", 1)[1]) - 2))
    public, public_writes = answers["/v1/responses"]
    assert parse_sse(public.text)[0]["type"] == "response.created"
    assert b"response.created" in first_write_after_head(public_writes)
    assert transcribed.json()["text"].startswith("emulated transcription")
    assert b"emulated transcription" in first_write_after_head(transcribe_writes)
