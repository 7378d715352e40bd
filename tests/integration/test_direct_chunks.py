"""The gateway's streamed answers are framed by the server's own protocol
(pooler.http_server): the Codex SSE relay and a `/v1/chat/completions` stream arrive whole
and correct while h11's `ChunkedWriter` frames none of their events. The emulator upstream
is served the same way, its last event too (with pooler.chunked_body's framing of h11's
chain, h11 still framed that one). The bytes themselves are compared with what
Hypercorn's H11Protocol wrote in tests/unit/test_http_server.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from h11._writers import ChunkedWriter
from harness import open_stack, parse_sse, responses_body


async def test_streamed_answers_are_framed_without_h11(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    framed_by_h11: list[bytes] = []
    send_data = ChunkedWriter.send_data

    def counted(self: ChunkedWriter, data: bytes, write: Callable[[bytes], Any]) -> None:
        framed_by_h11.append(bytes(data))
        send_data(self, data, write)

    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        monkeypatch.setattr(ChunkedWriter, "send_data", counted)  # the servers are installed
        with trio.fail_after(20):
            codex = await client.post(
                "/backend-api/codex/responses", json=responses_body("Reply with exactly: direct")
            )
            chat = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "gpt-5.5",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Reply with exactly: chat"}],
                },
            )
    assert codex.status_code == 200 and codex.headers["transfer-encoding"] == "chunked"
    events = parse_sse(codex.text)
    assert events[-1]["type"] == "response.completed"
    delta = "response.output_text.delta"
    assert "".join(e["delta"] for e in events if e["type"] == delta) == "direct"
    assert chat.status_code == 200 and chat.text.rstrip().endswith("data: [DONE]")
    # Nothing at all, upstream included (h11 serves no connection).
    assert framed_by_h11 == []
