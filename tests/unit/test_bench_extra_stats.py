"""The pure parts of the benchmark's failover and cache runs: request-log figures
(ops/bench/extra_stats.py) and the conversation script (ops/bench/conversations.py)."""

from __future__ import annotations

import json
import math
from typing import Any

from pooler.emulator import inbound
from pooler.emulator.prompt_cache import prompt_chain
from pooler.emulator.state import EmulatorState
from tests.unit.bench_support import load_bench

extra_stats = load_bench("extra_stats")
conversations = load_bench("conversations")

PATH = "/backend-api/codex/responses"


def entry(t: float, account: str | None, status: int = 200) -> dict[str, Any]:
    return {"time": t, "method": "POST", "path": PATH, "account_id": account, "status": status}


def test_responses_attempts_keeps_turns_only() -> None:
    log = [
        entry(1, "a"),
        {"time": 2, "method": "POST", "path": "/oauth/token", "account_id": "a", "status": 200},
        {"time": 3, "method": "GET", "path": PATH, "transport": "websocket", "status": 101},
        {"time": 4, "method": "response.create", "path": PATH, "account_id": "b", "status": 200},
    ]
    kept = extra_stats.responses_attempts(log)
    assert [e["time"] for e in kept] == [1, 4]
    assert extra_stats.attempts_by_account(kept) == {"a": 1, "b": 1}


def test_timeline_buckets_attempts_on_one_account() -> None:
    log = [entry(99.0, "a"), entry(100.1, "a"), entry(100.2, "b"), entry(101.7, "a")]
    log.append(entry(150.0, "a"))  # after the span: the last bucket
    assert extra_stats.timeline(log, "a", 100.0, 2.0, 0.5) == [2, 0, 0, 2]
    assert extra_stats.timeline([], "a", 0.0, 0.1, 0.5) == [0]


def test_session_moves_follow_answered_turns() -> None:
    log = [
        {**entry(1, "a"), "session_hash": "s1"},
        {**entry(2, "a", 500), "session_hash": "s1"},  # a failed attempt is no move
        {**entry(3, "b"), "session_hash": "s1"},
        {**entry(4, "a"), "session_hash": "s1"},
        {**entry(5, "c"), "session_hash": "s2"},
        {**entry(6, "c"), "session_hash": "s2"},
        entry(7, "d"),  # no session header
    ]
    moves = extra_stats.session_moves(log)
    assert (moves.conversations, moves.moved, moves.moves) == (2, 1, 2)


def test_most_sessions_picks_the_busiest_account() -> None:
    log = [
        {**entry(1, "a"), "session_hash": "s1"},
        {**entry(2, "a"), "session_hash": "s1"},
        {**entry(3, "b"), "session_hash": "s2"},
        {**entry(4, "b"), "session_hash": "s3"},
        {**entry(5, "c", 500), "session_hash": "s4"},
    ]
    assert extra_stats.most_sessions(log, ("a", "b", "c")) == "b"
    assert extra_stats.most_sessions([], ("x", "y")) == "x"


def test_ratio_and_full_hits() -> None:
    assert extra_stats.ratio(1, 4) == 0.25
    assert math.isnan(extra_stats.ratio(1, 0))
    ideal = {(0, 1): 0, (0, 2): 100, (0, 3): 200, (1, 2): 50}
    got = {(0, 1): 0, (0, 2): 100, (0, 3): 0}
    assert extra_stats.full_hits(got, ideal) == (1, 2)


def test_conversation_grows_and_resends_everything() -> None:
    chat = conversations.Conversation(3, thread_id="thread-x")
    first = json.loads(chat.ask(1))
    assert first["prompt_cache_key"] == "thread-x" and first["stream"] is True
    assert len(first["input"]) == 1 and "Reply with exactly: ok 1" in json.dumps(first)
    chat.answered([{"type": "message", "role": "assistant", "content": []}])
    second = json.loads(chat.ask(2))
    assert second["input"][:1] == first["input"] and len(second["input"]) == 3
    assert conversations.encode({"k": "é"}) == '{"k":"é"}'.encode()


def test_conversation_turns_hit_the_emulator_cache_fully() -> None:
    """The script's ideal: on one account, turn k caches all of turn k-1's prompt."""
    account = EmulatorState(accounts=1, now=0).accounts[0]
    chat = conversations.Conversation(0)
    previous = 0
    for turn in range(1, 5):
        raw = chat.ask(turn)
        body = json.loads(raw)
        use = inbound.read_prompt(body, len(raw), account)
        assert use.cached_tokens == previous
        previous = prompt_chain(body)[-1].tokens
        chat.answered([{"type": "message", "role": "assistant", "content": [{"text": "ok"}]}])


def test_completed_response_and_usage() -> None:
    usage = {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 640}}
    done = {"type": "response.completed", "response": {"output": [], "usage": usage}}
    sse = (
        b'event: response.created\ndata: {"type":"response.created"}\n\n'
        b"event: response.completed\r\ndata: " + json.dumps(done).encode() + b"\r\n\r\n"
    )
    response = conversations.completed_response(sse)
    assert response is not None and conversations.cached_tokens(response) == (640, 900)
    assert conversations.completed_response(b"event: x\ndata: {nope\n\n") is None
    assert conversations.cached_tokens({"usage": None}) == (0, 0)
