"""Through the whole stack: a streamed answer's head written alone (its first upstream piece
not yet at hand) costs the relay's task no loop turn (issue 17: SSE time to first byte under
load, where each turn is a pass over every runnable task). Counted, not timed.

The relay's next step after such a head is its wait for that first piece, which is the
schedule point: the server writes the head without the yield after the write
(`WAIT_FOLLOWS`), as it writes relayed pieces (`BODY_PIECES`). Before, the head's write
rescheduled the task once, and the wait for the piece came after. So that the piece is
never at hand whatever the machine's timing, the relay's look for it
(`UpstreamResponse.ready_piece`) is made to find nothing; the first read then takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from harness import open_stack, parse_sse, responses_body
from turn_counts import Reschedules

from pooler.http_server.protocol import Http1Protocol
from pooler.upstream import http1


@pytest.fixture
def head_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(server port, status, reschedules of the writing task) for each response head a
    server writes (the emulator's too: it runs in this process)."""
    seen: list[tuple[int, int, int]] = []
    send_response = Http1Protocol._send_response

    async def counted(self: Http1Protocol, status: int, *args: Any) -> None:
        counter = Reschedules(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            await send_response(self, status, *args)
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert self.server is not None
        seen.append((self.server[1], status, counter.count))

    monkeypatch.setattr(Http1Protocol, "_send_response", counted)
    monkeypatch.setattr(http1.UpstreamResponse, "ready_piece", lambda self: None)
    return seen


@pytest.mark.parametrize("path", ["/backend-api/codex/responses", "/v1/responses"])
async def test_a_head_written_alone_costs_no_turn(
    db_url: str, tmp_path: Path, head_writes: list[tuple[int, int, int]], path: str
) -> None:
    body = responses_body("Reply with exactly: one two")
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        port = urlsplit(stack.url).port
        with trio.fail_after(30):
            for _ in range(3):
                head_writes.clear()
                answer = await client.post(path, json=body)
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == "text/event-stream"
                events = parse_sse(answer.text)
                assert events[-1]["type"] == "response.completed"
                deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
                assert "".join(deltas) == "one two"  # every event relayed after the head
                # The answer's head: written with no reschedule (before: one, its yield).
                gateway = [(status, turns) for at, status, turns in head_writes if at == port]
                assert gateway == [(200, 0)], head_writes
