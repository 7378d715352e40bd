"""A finished request leaves nothing for Python's cycle collector (issue 17): what one
request allocates is freed by reference counting when it ends. A reference cycle per
request (the server's `PieceWriter` in its stream's scope held the stream strongly) makes
every request's stream, scope and what hangs off them garbage only a collection frees:
under SSE load that tripled the young collections and made each ~4 times longer (the
event loop's longest turns). Counted with the collector off, not timed: the streams a
collection frees after the requests are the ones only it could free. (A difference of
live streams before and after would also count streams of other connections that closed
meanwhile, and could go below zero.)"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import trio
from harness import open_stack, parse_sse, responses_body
from hypercorn.protocol.http_stream import HTTPStream

REQUESTS = 8


def streams_alive() -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is HTTPStream)


@pytest.mark.parametrize("path", ["/backend-api/codex/responses", "/v1/responses"])
@pytest.mark.parametrize("stream", [True, False])
async def test_finished_requests_leave_no_stream_behind(
    db_url: str, tmp_path: Path, path: str, stream: bool
) -> None:
    body = responses_body("Reply with exactly: one two three", stream=stream)
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            assert (await client.post(path, json=body)).status_code == 200  # warm
            gc.collect()
            gc.disable()
            try:
                for _ in range(REQUESTS):
                    answer = await client.post(path, json=body)
                    assert answer.status_code == 200, answer.text
                    if stream:
                        assert parse_sse(answer.text)[-1]["type"] == "response.completed"
                await trio.sleep(0.05)  # the connection's task has closed the last stream
                alive = streams_alive()
                gc.collect()
                left = alive - streams_alive()
            finally:
                gc.enable()
    assert left == 0, f"{left} streams of {REQUESTS} requests wait for the cycle collector"
