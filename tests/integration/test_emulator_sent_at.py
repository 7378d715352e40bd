"""The emulator's `x-emulator-sent-at` knob: the terminal event's `response.metadata`
says when the emulator sent it (this machine's CLOCK_MONOTONIC). `ops/bench`'s paced
extra times each path's tail from that stamp (issue 17: a non-streamed answer after a
paced stream), so the stamp must reach the client on every path the extra measures:
the Codex route streamed and not, and `/v1/responses` not streamed. Without the knob,
`metadata` stays as the emulator always answers it."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from pooler.emulator.events import SENT_AT
from tests.harness import open_stack, parse_sse, responses_body

KNOB = {"client_metadata": {SENT_AT: "1"}}


def stamped(metadata: dict[str, str], before: float) -> float:
    stamp = float(metadata[SENT_AT])
    assert before <= stamp <= time.monotonic()
    return stamp


async def test_the_sent_at_stamp_reaches_the_client_on_every_paced_path(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            before = time.monotonic()
            streamed = await client.post(
                "/backend-api/codex/responses", json={**responses_body(), **KNOB}
            )
            assert streamed.status_code == 200, streamed.text
            completed = parse_sse(streamed.text)[-1]
            assert completed["type"] == "response.completed"
            stamped(completed["response"]["metadata"], before)

            before = time.monotonic()
            codex = await client.post(
                "/backend-api/codex/responses",
                json={**responses_body(), "stream": False, **KNOB},
            )
            assert codex.status_code == 200, codex.text
            stamped(codex.json()["metadata"], before)

            before = time.monotonic()
            v1 = await client.post(
                "/v1/responses",
                json={"model": "gpt-5.5", "input": "Reply with exactly: ok", **KNOB},
            )
            assert v1.status_code == 200, v1.text
            stamped(v1.json()["metadata"], before)

            plain = await client.post("/backend-api/codex/responses", json=responses_body())
            assert parse_sse(plain.text)[-1]["response"]["metadata"] == {}
