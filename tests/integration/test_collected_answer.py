"""A client that did not stream gets its answer at the upstream's terminal event, not when
the upstream ends its body (issue 17: the non-streamed answer came late after a paced
stream). The emulator's `x-emulator-end-delay-ms` holds the end of its body back after
`response.completed`, as a slow network may; the gateway's answer must not wait for it,
and the upstream connection must still serve the next request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.harness import open_stack, responses_body
from tests.integration.routing_support import log_row

RESPONSES = "/backend-api/codex/responses"
END_DELAY_MS = 8000  # far beyond the deadline below: only an early answer passes
ANSWER_DEADLINE_S = 6.0


def held_end(**extra: Any) -> dict[str, Any]:
    return {
        **responses_body(**extra),
        "stream": False,
        "client_metadata": {"x-emulator-end-delay-ms": str(END_DELAY_MS)},
    }


async def test_a_collected_answer_does_not_wait_for_the_end_of_the_upstream_body(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(ANSWER_DEADLINE_S):
            codex = await client.post(RESPONSES, json=held_end())
        assert codex.status_code == 200, codex.text
        assert codex.json()["status"] == "completed"
        with trio.fail_after(ANSWER_DEADLINE_S):
            v1 = await client.post(
                "/v1/responses",
                json={
                    "model": "gpt-5.5",
                    "input": "Reply with exactly: ok",
                    "client_metadata": {"x-emulator-end-delay-ms": str(END_DELAY_MS)},
                },
            )
        assert v1.status_code == 200, v1.text
        assert v1.json()["status"] == "completed"
        row = await log_row(stack, codex.headers["x-request-id"])
        assert (row["status_code"], row["outcome"]) == (200, "completed")
        assert row["duration_ms"] < END_DELAY_MS
        # A request after the held ones is answered as usual.
        with trio.fail_after(20):
            after = await client.post(RESPONSES, json={**responses_body(), "stream": False})
        assert after.status_code == 200 and after.json()["status"] == "completed"
