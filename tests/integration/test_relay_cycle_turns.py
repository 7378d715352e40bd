"""Through the whole stack: the fixed cost of one relay cycle of a streamed answer (issue 17:
CPU per SSE event when many streams are in flight), counted, not timed.

One cycle is: the upstream socket readable, the relay's task woken, one read, the piece
relayed to the client, the wait for the next read. The relay's task is rescheduled once
per cycle, by the upstream's read (before: twice, a send also yielded to the loop right
before the wait that follows it, and each task step resumes the ~20 frames between the
ASGI app and the relay). The emulator paces its events (`x-emulator-delay-ms`) so that
most reads bring one event; reschedules are counted per upstream read, so the figure
does not depend on how the events happen to be batched. The stream's idle deadline is
pushed on lazily (pooler.web.responses_relay `_pump`), and Python calls in the relaying
task are counted per read with a profile hook."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import open_stack, parse_sse, responses_body
from turn_counts import Reschedules

from pooler.upstream import http1
from pooler.web import responses_relay


class CycleCounts:
    def __init__(self) -> None:
        self.reads = 0
        self.reschedules = 0
        self.pumping = False
        self.task: trio.lowlevel.Task | None = None
        self.deadline_pushes = 0  # by the relaying task, while relaying
        self.read_coroutines = 0  # `http1._read` calls, while relaying
        self.python_calls = 0  # Python functions called or resumed in the relaying task


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CycleCounts:
    counts = CycleCounts()
    pump = responses_relay._pump

    async def counted_pump(*args: Any, **kwargs: Any) -> Any:
        counts.task = trio.lowlevel.current_task()
        counter = Reschedules(counts.task)
        trio.lowlevel.add_instrument(counter)
        counts.pumping = True
        task, current_task = counts.task, trio.lowlevel.current_task

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                try:
                    if current_task() is task:
                        counts.python_calls += 1
                except RuntimeError:  # the run loop's own code, between tasks
                    pass

        sys.setprofile(profile)
        try:
            return await pump(*args, **kwargs)
        finally:
            sys.setprofile(None)
            counts.pumping = False
            counts.task = None
            trio.lowlevel.remove_instrument(counter)
            counts.reschedules += counter.count

    received = http1.UpstreamResponse._received

    def counted_received(self: Any, data: bytes) -> None:
        if counts.pumping:
            counts.reads += 1
        received(self, data)

    deadline: property = vars(trio.CancelScope)["deadline"]
    assert deadline.fset is not None
    push = deadline.fset

    def set_deadline(self: trio.CancelScope, value: float) -> None:
        if counts.pumping and trio.lowlevel.current_task() is counts.task:
            counts.deadline_pushes += 1
        push(self, value)

    monkeypatch.setattr(trio.CancelScope, "deadline", property(deadline.fget, set_deadline))
    read = http1._read

    async def counted_read(conn: Any) -> Any:
        if counts.pumping:
            counts.read_coroutines += 1
        return await read(conn)

    monkeypatch.setattr(http1, "_read", counted_read)
    monkeypatch.setattr(responses_relay, "_pump", counted_pump)
    monkeypatch.setattr(http1.UpstreamResponse, "_received", counted_received)
    return counts


@pytest.mark.parametrize("path", ["/backend-api/codex/responses", "/v1/responses"])
async def test_a_relayed_piece_costs_one_task_step(
    db_url: str, tmp_path: Path, counted: CycleCounts, path: str
) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    body = responses_body(
        f"Reply with exactly: {words}", client_metadata={"x-emulator-delay-ms": "3"}
    )
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            answer = await client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    events = parse_sse(answer.text)
    assert events[-1]["type"] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == words  # every event relayed, in order
    assert counted.reads >= 5  # paced: the stream came in many reads
    # One reschedule per read (its wait), and at most one more (the body's end may come
    # in a read of its own); before: two per read.
    assert counted.reschedules <= counted.reads + 1, (counted.reschedules, counted.reads)
    # The stream's idle deadline is set once, not pushed on after every read (each push a
    # context manager and a few calls inside trio): this stream lasts well under the
    # slack (`idle_slack`, a second at the default 300 s).
    assert counted.deadline_pushes == 1, counted.deadline_pushes
    # A body read over plain TCP waits and reads in the iterator's own frame: no coroutine
    # of its own per read (nor a frame more to resume when the upstream's bytes come).
    assert counted.read_coroutines == 0, counted.read_coroutines
    # Python functions called or resumed in the relaying task per read (~70 on the Codex
    # route, ~80 on `/v1`: its presenter; before, ~135 on both): the second task step
    # resumed every frame between the ASGI app and the relay again, and each read made a
    # coroutine, a deadline push and the send's layers (HTTPStream, the protocol, Hypercorn).
    assert counted.python_calls / counted.reads < 100, (counted.python_calls, counted.reads)
