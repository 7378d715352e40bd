"""Pure figures of the failover and cache runs, from the emulator's request log and the
answers the conversations got. No I/O, no clock (tests/unit/test_bench_extra_stats.py).

A request-log entry (GET /_emulator/requests) is metadata of one upstream attempt:
`time` (epoch s), `method`, `path`, `account_id`, `status`, `fault`, and for `/responses`
`session_hash` (a short hash of the `session-id` header), `input_tokens`, `cached_tokens`.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RESPONSES_PATH = "/backend-api/codex/responses"
RESPONSE_METHODS = frozenset({"POST", "response.create"})

LogEntry = Mapping[str, Any]


def responses_attempts(log: Iterable[LogEntry]) -> list[LogEntry]:
    """The `/responses` turns (HTTP or websocket), in log order."""
    return [
        e for e in log if e.get("path") == RESPONSES_PATH and e.get("method") in RESPONSE_METHODS
    ]


def attempts_by_account(entries: Iterable[LogEntry]) -> Counter[str]:
    return Counter(str(e.get("account_id")) for e in entries)


def timeline(
    entries: Iterable[LogEntry], account_id: str, start: float, span_s: float, bucket_s: float
) -> list[int]:
    """Attempts on `account_id` per `bucket_s` since `start`, over `span_s` (later ones
    land in the last bucket, earlier ones in the first)."""
    buckets = [0] * max(1, math.ceil(span_s / bucket_s))
    for entry in entries:
        if entry.get("account_id") == account_id:
            index = int((float(entry["time"]) - start) // bucket_s)
            buckets[min(len(buckets) - 1, max(0, index))] += 1
    return buckets


@dataclass(frozen=True)
class Moves:
    conversations: int  # sessions with at least one answered turn
    moved: int  # sessions answered by more than one account
    moves: int  # account changes between consecutive answered turns, all sessions


def session_moves(entries: Iterable[LogEntry]) -> Moves:
    """How conversations (by `session_hash`) wandered between accounts; only answered
    turns (status 200) count, in log order."""
    accounts: dict[str, list[str]] = {}
    for entry in entries:
        session = entry.get("session_hash")
        if session and entry.get("status") == 200:
            accounts.setdefault(str(session), []).append(str(entry.get("account_id")))
    moves = sum(
        sum(1 for before, after in itertools.pairwise(seq) if before != after)
        for seq in accounts.values()
    )
    moved = sum(1 for seq in accounts.values() if len(set(seq)) > 1)
    return Moves(len(accounts), moved, moves)


def ratio(part: float, whole: float) -> float:
    """part / whole, NaN when whole is 0 (nothing to compare with)."""
    return part / whole if whole else math.nan


TurnKey = tuple[int, int]  # (conversation index, turn number from 1)


def full_hits(cached: Mapping[TurnKey, int], ideal: Mapping[TurnKey, int]) -> tuple[int, int]:
    """(turns after the first that cached at least their ideal, turns after the first
    that were compared): turns missing on either side are left out."""
    compared = [key for key in ideal if key[1] > 1 and key in cached]
    return sum(1 for key in compared if cached[key] >= ideal[key]), len(compared)


def most_sessions(entries: Iterable[LogEntry], among: Sequence[str]) -> str:
    """Of the accounts `among`, the one that answered the most distinct sessions (the
    first of `among` on a tie or when none answered)."""
    sessions: dict[str, set[str]] = {account: set() for account in among}
    for entry in entries:
        account, session = entry.get("account_id"), entry.get("session_hash")
        if account in sessions and session and entry.get("status") == 200:
            sessions[str(account)].add(str(session))
    return max(among, key=lambda account: len(sessions[account]))
