"""The cache run: many concurrent multi-turn conversations (conversations.py) over a Pool
of 4 accounts, against the emulator's per-account prefix cache
(pooler/emulator/prompt_cache.py: a turn's cached tokens are those of the longest prompt
prefix the same account saw before; a conversation moved to another account starts cold).

1. **ideal**: the same script directly against one emulator account: every turn after
   the first hits its whole previous prompt. Its total cached tokens is the reference.
2. **healthy**: through the gateway's `cache` Pool, fresh conversations.
3. **failing**: the same, and once half the turns are answered the account that holds
   the most conversations starts answering `server_error_500` to everything.

All conversations are under way at once, with at most `concurrency` turns in flight, so
at the halfway mark every conversation is about half done.

Hit rate = cached tokens of the run / cached tokens of the ideal run. From the emulator's
request log (reset before each run): how many conversations (by `session-id` hash)
changed account, and whether the bodies reached the upstream byte for byte.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio
from conversations import Conversation, ConversationRun, Endpoint, run_conversations
from emulator_api import EmulatorControl
from extra_stats import (
    attempts_by_account,
    full_hits,
    most_sessions,
    ratio,
    responses_attempts,
    session_moves,
)
from runner import Run, log
from stats import summarize

FAULT = "server_error_500"
FAULT_TIMES = 1_000_000


@dataclass(frozen=True)
class CachePlan:
    conversations: int
    turns: int
    concurrency: int


QUICK_CACHE = CachePlan(conversations=40, turns=8, concurrency=20)
FULL_CACHE = CachePlan(conversations=100, turns=10, concurrency=40)


def run_figures(
    result: ConversationRun, attempts: list[Any], ideal: ConversationRun | None
) -> dict[str, Any]:
    cached = sum(result.cached.values())
    latency = summarize(result.latencies_s)
    moves = session_moves(attempts)
    figures: dict[str, Any] = {
        "turns_answered": result.answered,
        "turns_lost": result.lost_turns,
        "errors": sum(result.errors.values()),
        "errors_by_kind": dict(result.errors),
        "input_tokens": sum(result.inputs.values()),
        "cached_tokens": cached,
        "turn_p50_ms": latency.p50 * 1000,
        "turn_p99_ms": latency.p99 * 1000,
        "duration_s": result.duration_s,
        "upstream_attempts": len(attempts),
        "failed_attempts": sum(1 for e in attempts if e.get("status") != 200),
        "conversations": moves.conversations,
        "conversations_moved": moves.moved,
        "account_moves": moves.moves,
        "accounts_used": len(attempts_by_account(attempts)),
    }
    digests = {e.get("body_sha256") for e in attempts}
    figures["bodies_intact"] = ratio(len(digests & result.sent), len(digests - {None}))
    if ideal is not None:
        hits, compared = full_hits(result.cached, ideal.cached)
        figures["hit_rate"] = ratio(cached, sum(ideal.cached.values()))
        figures["full_hit_turns"] = ratio(hits, compared)
    return figures


class _Halfway:
    """Counts answered turns; `reached` is set at half of them (sync: the runner's hook)."""

    def __init__(self, total: int) -> None:
        self.threshold = max(1, total // 2)
        self.done = 0
        self.reached = trio.Event()

    def __call__(self) -> None:
        self.done += 1
        if self.done >= self.threshold:
            self.reached.set()


async def _failing_run(
    endpoint: Endpoint, control: EmulatorControl, accounts: tuple[str, ...], plan: CachePlan
) -> tuple[ConversationRun, dict[str, Any]]:
    halfway = _Halfway(plan.conversations * plan.turns)
    fault: dict[str, Any] = {}

    async def arm_at_halfway() -> None:
        await halfway.reached.wait()
        attempts = responses_attempts(await control.requests())
        account = most_sessions(attempts, accounts)
        await control.arm(account, FAULT, FAULT_TIMES)
        fault.update(
            account_index=accounts.index(account),
            armed_after_turns=halfway.done,
            armed_at=time.time(),
            account_id=account,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arm_at_halfway)
        result = await run_conversations(
            endpoint, plan.conversations, plan.turns, plan.concurrency, on_turn=halfway
        )
        nursery.cancel_scope.cancel()  # if the run ended before half its turns
    return result, fault


async def cache_run(run: Run, plan: CachePlan) -> dict[str, Any]:
    endpoints = run.endpoints
    pool = endpoints.pool("cache")
    control = EmulatorControl(endpoints.emulator_port)
    direct = Endpoint(
        endpoints.emulator_port,
        {
            "authorization": f"Bearer {endpoints.access_token}",
            "chatgpt-account-id": endpoints.account_id,
        },
    )
    gateway = Endpoint(endpoints.gateway_port, {"authorization": f"Bearer {pool.key}"})
    shape = (plan.conversations, plan.turns, plan.concurrency)

    await control.reset()
    ideal = await run_conversations(direct, *shape)
    ideal_log = responses_attempts(await control.requests())
    await control.reset()
    healthy = await run_conversations(gateway, *shape)
    healthy_log = responses_attempts(await control.requests())
    await control.reset()
    failing, fault = await _failing_run(gateway, control, pool.account_ids, plan)
    failing_log = responses_attempts(await control.requests())
    await control.reset()

    for name, result in (("direct (cache)", ideal), ("gateway (cache)", healthy)):
        run.results.errors.setdefault(name, Counter()).update(result.errors)
    run.results.errors.setdefault("gateway (cache)", Counter()).update(failing.errors)
    failing_figures = run_figures(failing, failing_log, ideal)
    if fault:
        armed_at = fault.pop("armed_at")
        account = fault.pop("account_id")
        after = [e for e in failing_log if float(e["time"]) >= armed_at]
        fault["attempts_on_account_after"] = attempts_by_account(after)[account]
    failing_figures["fault"] = fault or None
    report: dict[str, Any] = {
        "pool_accounts": len(pool.account_ids),
        "plan": {
            "conversations": plan.conversations,
            "turns": plan.turns,
            "concurrency": plan.concurrency,
            "example_first_body_bytes": len(Conversation(0).ask(1)),
        },
        "ideal": run_figures(ideal, ideal_log, None),
        "healthy": run_figures(healthy, healthy_log, ideal),
        "failing": failing_figures,
    }
    log(
        f"cache: hit rate {report['healthy']['hit_rate']:.1%} healthy, "
        f"{failing_figures['hit_rate']:.1%} with one account failing from mid-run; "
        f"conversations that changed account: {report['healthy']['conversations_moved']} "
        f"healthy, {failing_figures['conversations_moved']} failing (of {plan.conversations})"
    )
    return report
