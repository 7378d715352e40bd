"""What an account's answer costs its actor, and a key check costs the request (issue 17),
counted (calls under cProfile), not timed: the quota headers an account repeats are parsed
once, the evidence and the outcome make one snapshot copy, and the key digest builds no
`hmac.HMAC` per request."""

from __future__ import annotations

import cProfile
import os
import pstats
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from pooler.actors import messages as m
from pooler.actors.account import AccountActor
from pooler.actors.pool import PoolSupervisor
from pooler.crypto import key_digest
from pooler.emulator.usage import WindowView, rate_limit_headers
from pooler.protocol.ratelimit import parse_rate_limit_headers
from pooler.routing.evidence import apply_evidence
from pooler.routing.snapshot import AccountSnapshot, updated
from pooler.web.attempts import Attempt, run_attempts
from pooler.web.keys import KeyCache
from pooler.web.leasing import LeaseAttempts, continuity_digest, lease_account, pin, release
from pooler.web.request_record import RequestRecord
from tests.turn_counts import counting_reschedules
from tests.unit.test_actor_dispatch import account_actor as dispatch_account_actor
from tests.unit.test_attempts import POOL, open_pool

NOW = 1_800_000_000.0


def account_actor(clock: list[float]) -> AccountActor:
    return dispatch_account_actor(persist_quota=lambda *note: None, clock=lambda: clock[0])


def quota_headers(used: float, *, reset_at: bool = True) -> tuple[tuple[bytes, bytes], ...]:
    headers = rate_limit_headers(
        WindowView(used, 300, int(NOW) + 9000, 9000),
        WindowView(1.0, 10080, int(NOW) + 500_000, 500_000),
    )
    return tuple(h for h in headers if reset_at or not h[0].endswith(b"-reset-at"))


def calls(profile: cProfile.Profile, path_end: str, name: str) -> int:
    return sum(
        stat[1]  # primitive calls
        for (path, _, func), stat in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
        if path.endswith(path_end) and func == name
    )


async def release_each(
    actor: AccountActor, outcomes: list[m.Outcome], clock: list[float]
) -> cProfile.Profile:
    await actor.setup()
    profile = cProfile.Profile()
    for outcome in outcomes:
        lease = actor._confirm("responses")
        assert lease is not None
        profile.enable()
        actor.dispatch(m.Release(lease.lease_id, outcome))
        profile.disable()
        clock[0] += 1.0
    return profile


async def test_repeated_quota_headers_are_parsed_once() -> None:
    clock = [NOW]
    actor = account_actor(clock)
    same = m.Outcome(m.OK, 200, quota_headers(3.0))
    profile = await release_each(actor, [same, same, same], clock)
    # Parsed on the first answer only (the old code parsed all three).
    assert calls(profile, "pooler/protocol/ratelimit.py", "_families") == 1
    snap = actor.state.snapshot
    assert snap.primary is not None and snap.primary.used_percent == 3.0
    assert snap.primary.reset_at == int(NOW) + 9000
    assert snap.primary.observed_at == NOW + 2.0  # each answer is still fresh evidence
    assert snap.in_flight == 0

    moved = m.Outcome(m.OK, 200, quota_headers(4.0))
    profile = await release_each(actor, [moved], clock)
    assert calls(profile, "pooler/protocol/ratelimit.py", "_families") == 1
    assert actor.state.snapshot.primary is not None
    assert actor.state.snapshot.primary.used_percent == 4.0


async def test_headers_the_parse_never_reads_may_change() -> None:
    """Every answer has its own `x-request-id`: the quota headers are still parsed once;
    a quota header that changes, or a block in another order, is parsed again."""
    clock = [NOW]
    actor = account_actor(clock)
    quota = quota_headers(3.0)

    def answer(request_id: bytes, block: tuple[tuple[bytes, bytes], ...] = quota) -> m.Outcome:
        return m.Outcome(m.OK, 200, ((b"x-request-id", request_id), *block))

    profile = await release_each(actor, [answer(b"r1"), answer(b"r2"), answer(b"r3")], clock)
    assert calls(profile, "pooler/protocol/ratelimit.py", "_families") == 1
    changed = tuple((n, b"1700000000") if n.endswith(b"-reset-at") else (n, v) for n, v in quota)
    reordered = (quota[1], quota[0], *quota[2:])
    profile = await release_each(actor, [answer(b"r4", changed), answer(b"r5", reordered)], clock)
    assert calls(profile, "pooler/protocol/ratelimit.py", "_families") == 2
    primary = actor.state.snapshot.primary
    assert primary is not None and primary.reset_at == int(NOW) + 9000  # the reordered one


async def test_headers_read_relative_to_now_are_parsed_every_time() -> None:
    clock = [NOW]
    actor = account_actor(clock)
    relative = m.Outcome(m.OK, 200, quota_headers(3.0, reset_at=False))
    profile = await release_each(actor, [relative, relative], clock)
    assert calls(profile, "pooler/protocol/ratelimit.py", "_families") == 2
    primary = actor.state.snapshot.primary
    assert primary is not None and primary.reset_at == NOW + 1.0 + 9000  # the second's now


async def test_an_answer_with_quota_headers_copies_the_snapshot_once() -> None:
    clock = [NOW]
    actor = account_actor(clock)
    headers = quota_headers(3.0)
    before = actor.state.snapshot
    profile = await release_each(actor, [m.Outcome(m.OK, 200, headers)], clock)
    # One copy (was two, by dataclasses.replace: the evidence's, then the outcome's).
    copies = calls(profile, "dataclasses.py", "replace")
    copies += calls(profile, "pooler/routing/snapshot.py", "updated")
    assert copies == 1
    evidence = parse_rate_limit_headers(headers, NOW)
    assert evidence is not None
    expected = apply_evidence(before, evidence, NOW)
    snap = actor.state.snapshot
    assert (snap.primary, snap.secondary, snap.has_credits) == (
        expected.primary,
        expected.secondary,
        expected.has_credits,
    )


def test_updated_is_replace() -> None:
    old = AccountSnapshot(account_id="a", label="A", in_flight=2, models=frozenset({"m"}))
    changes: dict[str, object] = {"in_flight": 3, "blocked_until": 5.0, "label": "B"}
    new = updated(old, changes)
    assert new == replace(old, **changes)  # type: ignore[arg-type]
    assert old.in_flight == 2 and new.models is old.models
    with pytest.raises(AttributeError):
        updated(old, {"no_such_field": 1})


@pytest.mark.parametrize("secret_len", [16, 32, 64, 65, 100])
def test_the_key_digest_is_the_stored_hmac(secret_len: int) -> None:
    secret = os.urandom(secret_len)
    cache = KeyCache(secret)
    for raw in ("sk-cxp-" + "a" * 43, "", "clé-ü", "x" * 500):
        assert cache.digest(raw) == key_digest(secret, raw)


def test_a_key_check_builds_no_hmac_object() -> None:
    secret = os.urandom(32)
    cache = KeyCache(secret)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        cache.digest("sk-cxp-" + "a" * 43)
    profile.disable()
    assert calls(profile, "hmac.py", "__init__") == 0
    assert calls(profile, "hmac.py", "new") == 0


class ActorSteps(trio.abc.Instrument):
    """Task steps of the actors' tasks (found by their `serve` frames), per actor class."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        coro: Any = task.coro
        while coro is not None:  # down the chain of awaits (coroutines, generators)
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None and frame.f_code.co_name == "serve":
                actor = frame.f_locals.get("self")
                if isinstance(actor, AccountActor | PoolSupervisor):
                    self.steps[type(actor).__name__] += 1
                    return
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)


async def test_a_request_to_idle_actors_wakes_none() -> None:
    """One request, lease to release with its quota headers and the hard pin of its
    response id, while the actors are idle: no step of either actor's task. The lease
    request, the offer, the pin and the release are each taken in the sending task
    (`Mailbox.handle_now`; they were a step each: two of the supervisor, two of the
    account), and no reply is awaited by an actor."""
    requests = 20
    async with open_pool() as pool:
        gw = pool.gw

        async def exchange(attempt: Attempt) -> None:
            await trio.lowlevel.checkpoint()
            key = continuity_digest("response", attempt.record.account_id)
            pin(gw.pool_mailbox, POOL, (key,), attempt.lease.account_id, hard=True)
            attempt.ended(m.Outcome(m.OK, 200, ((b"x-request-id", b"r"), *quota_headers(3.0))))

        steps = ActorSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for _ in range(requests):
                record = RequestRecord("r", "responses", "http")
                await run_attempts(gw, LeaseAttempts(POOL, ()), record, exchange, budget=3)
                with trio.fail_after(5):
                    await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(steps)
        await pool.settled()
        assert steps.steps == {}
        for handle in pool.supervisor.accounts.values():
            assert handle.actor.quota_headers.parses <= 1  # parsed once per account


async def test_a_lease_from_idle_actors_costs_no_turn_of_the_loop() -> None:
    """Issue 17: the lease of a request whose supervisor and account are idle comes back
    without the requester being rescheduled (it was three passes of the event loop on
    the way to the first byte: to the supervisor, to the account, back to the request)."""
    async with open_pool() as pool:
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            with counting_reschedules() as turns, trio.fail_after(5):
                lease = await lease_account(
                    pool.gw.pool_mailbox, LeaseAttempts(POOL, ()), timeout=5
                )
            assert lease is not None
            assert turns.count == 0
            release(lease, m.Outcome(m.OK, 200))
            with trio.fail_after(5):
                await trio.testing.wait_all_tasks_blocked()
        await pool.settled()
