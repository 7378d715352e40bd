"""Through the whole stack: from a streamed answer's head to the relay's first wait for the
upstream, the relay's task takes no turn of the event loop (issue 17: SSE time to first
byte under load, where each turn is a pass over every runnable task). Counted, not timed.

Either the first upstream piece is at hand and goes out in one write with the head
(BODY_FOLLOWS), or it is not and the head goes out alone; in both cases the relay's next
step is `_pump`'s wait for the upstream, which is the schedule point, so the server writes
without the yield after the write: the head alone marked `WAIT_FOLLOWS`, the head with its
piece through the `BODY_PIECES` writer. Before, that write rescheduled the task once.
Whether the piece is at hand is forced, not left to the machine's timing: the relay's look
for it (`UpstreamResponse.ready_piece`) finds nothing, or the upstream head's read returns
only once the socket holds the first body bytes (test_head_with_first_event's fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from harness import open_stack, parse_sse, responses_body
from test_head_with_first_event import first_event_at_hand  # noqa: F401 (a fixture)
from turn_counts import Reschedules

from pooler.http_server.protocol import Http1Protocol
from pooler.upstream import http1
from pooler.web import responses_relay


class HeadToWait:
    """Per streamed answer of the gateway: its head's write (alone, or with its first piece)
    and how often the relay's task was rescheduled from the head to the relay's first wait
    for the upstream (`_pump` entered: its first read)."""

    def __init__(self) -> None:
        self.port = 0
        self.counter: Reschedules | None = None
        self.turns: list[int] = []

    def stop(self) -> None:
        if self.counter is not None:
            trio.lowlevel.remove_instrument(self.counter)
            self.turns.append(self.counter.count)
            self.counter = None


@pytest.fixture
def head_to_wait(monkeypatch: pytest.MonkeyPatch) -> HeadToWait:
    seen = HeadToWait()
    send_response = Http1Protocol._send_response

    async def counted(self: Http1Protocol, status: int, *args: Any) -> None:
        assert self.server is not None
        if self.server[1] == seen.port and status == 200:  # not the emulator's (in-process)
            seen.counter = Reschedules(trio.lowlevel.current_task())
            trio.lowlevel.add_instrument(seen.counter)
        await send_response(self, status, *args)

    pump = responses_relay._pump

    async def counted_pump(*args: Any, **kwargs: Any) -> Any:
        seen.stop()
        return await pump(*args, **kwargs)

    monkeypatch.setattr(Http1Protocol, "_send_response", counted)
    monkeypatch.setattr(responses_relay, "_pump", counted_pump)
    return seen


@pytest.fixture
def first_event_late(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1.UpstreamResponse, "ready_piece", lambda self: None)


async def answer_counted(db_url: str, tmp_path: Path, seen: HeadToWait, path: str) -> None:
    body = responses_body("Reply with exactly: one two")
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        port = urlsplit(stack.url).port
        assert port is not None
        seen.port = port
        with trio.fail_after(30):
            for _ in range(3):
                answer = await client.post(path, json=body)
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == "text/event-stream"
                events = parse_sse(answer.text)
                assert events[-1]["type"] == "response.completed"
                deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
                assert "".join(deltas) == "one two"  # every event relayed after the head


PATHS = ["/backend-api/codex/responses", "/v1/responses"]


@pytest.mark.usefixtures("first_event_late")
@pytest.mark.parametrize("path", PATHS)
async def test_a_head_written_alone_costs_no_turn(
    db_url: str, tmp_path: Path, head_to_wait: HeadToWait, path: str
) -> None:
    await answer_counted(db_url, tmp_path, head_to_wait, path)
    assert head_to_wait.turns == [0, 0, 0]  # before: [1, 1, 1], the head write's yield


@pytest.mark.usefixtures("first_event_at_hand")
@pytest.mark.parametrize("path", PATHS)
async def test_a_head_with_its_first_piece_costs_no_turn(
    db_url: str, tmp_path: Path, head_to_wait: HeadToWait, path: str
) -> None:
    await answer_counted(db_url, tmp_path, head_to_wait, path)
    assert head_to_wait.turns == [0, 0, 0]  # before: [1, 1, 1], the first piece's write's yield
