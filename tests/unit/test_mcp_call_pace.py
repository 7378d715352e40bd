"""The MCP call pace: a burst per token, then its rate; the process's own bound across
tokens; a refusal reserves nothing."""

from __future__ import annotations

from pooler.mcp.call_pace import (
    MAX_WAIT_S,
    PER_PROCESS_BURST,
    PER_TOKEN_BURST,
    PER_TOKEN_PER_S,
    CallPace,
)


def test_a_token_gets_its_burst_then_waits_then_is_refused() -> None:
    pace = CallPace()
    waits = [pace.reserve("token-a", 100.0) for _ in range(int(PER_TOKEN_BURST))]
    assert waits == [0.0] * int(PER_TOKEN_BURST)
    queued = [pace.reserve("token-a", 100.0) for _ in range(int(MAX_WAIT_S * PER_TOKEN_PER_S))]
    assert all(w is not None and 0 < w <= MAX_WAIT_S for w in queued)
    assert pace.reserve("token-a", 100.0) is None
    assert pace.reserve("token-b", 100.0) == 0.0  # another token has its own burst
    assert pace.reserve("token-a", 100.0 + 10.0) == 0.0  # refilled


def test_the_process_bounds_many_tokens_together() -> None:
    pace = CallPace()
    answers = [pace.reserve(f"token-{i}", 5.0) for i in range(200)]
    immediate = sum(1 for a in answers if a == 0.0)
    assert immediate == int(PER_PROCESS_BURST)
    assert None in answers  # past the burst and the wait, refused
