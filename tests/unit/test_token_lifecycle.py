"""An account's token over its whole life, at the AccountActor level under a MockClock.

The fake issuer mints JWTs whose `iat`/`exp` are in mock time (the actor reads wall time
through its injectable `clock`, here the MockClock shifted to a realistic epoch), and its
fake upstream accepts a token only while the mock clock is before its `exp`. So an hour
of traffic takes a second, and "no request saw an expired token" is exact.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pooler.actors import messages as m
from pooler.actors.account import (
    REFRESH_RETRY_FIRST_S,
    AccountActor,
    AccountState,
    Credentials,
    RefreshResult,
    RefreshUnavailable,
    credentials_from_token,
)
from pooler.actors.runtime import Mailbox, call
from pooler.emulator.tokens import mint_unsigned_jwt
from pooler.protocol.jwt import jwt_expiry
from pooler.routing.snapshot import AccountSnapshot
from pooler.upstream.http1 import UpstreamPool

EPOCH = 1_800_000_000.0  # mock time 0, as epoch seconds
REFRESH_AHEAD_FRACTION = 0.8  # DESIGN §2: refresh at 80 % of the token's life
REFRESH_LATENCY_S = 0.2  # how long the fake OAuth call takes, in mock time
ACCOUNT_ID = "11111111-1111-1111-1111-111111111111"


def wall() -> float:
    """The actor's wall clock: epoch seconds that move with the MockClock."""
    return EPOCH + trio.current_time()


class FakeIssuer:
    """The OAuth server and the upstream in one: mints tokens valid for `ttl` seconds of
    mock time, and says whether the upstream would accept a token now.

    `fail` maps a refresh call's number (1-based) to the failure it returns instead:
    "transient" (a 5xx, the account stays routable) or a reauth reason (permanent)."""

    def __init__(self, ttl: float, fail: dict[int, str] | None = None) -> None:
        self.ttl = ttl
        self.fail = fail or {}
        self.expiry: dict[str, float] = {}
        self.calls: list[tuple[float, str]] = []  # (mock time, "ok" or the failure)
        self.finished: list[float] = []  # mock time each refresh call returned
        self.current = self._mint()

    def _mint(self) -> str:
        now = wall()
        token = mint_unsigned_jwt({"iat": now, "exp": now + self.ttl, "n": len(self.expiry)})
        self.expiry[token] = now + self.ttl
        return token

    def accepts(self, token: str) -> bool:
        return wall() < self.expiry[token]

    async def load(self, account_id: str) -> Credentials:
        assert account_id == ACCOUNT_ID
        return credentials_from_token(self.current)

    async def refresh(self, account_id: str, stale_token: str) -> RefreshResult:
        assert account_id == ACCOUNT_ID
        number = len(self.calls) + 1
        failure = self.fail.get(number)
        self.calls.append((trio.current_time(), failure or "ok"))
        try:
            await trio.sleep(REFRESH_LATENCY_S)
            if failure == "transient":
                return RefreshResult(None, error="server_error")
            if failure is not None:
                return RefreshResult(None, reauth_reason=failure)
            if stale_token == self.current:
                self.current = self._mint()
            return RefreshResult(self.current)
        finally:
            self.finished.append(trio.current_time())

    def call_times(self, kind: str | None = None) -> list[float]:
        return [t for t, what in self.calls if kind is None or what == kind]


@asynccontextmanager
async def running_actor(issuer: FakeIssuer) -> AsyncIterator[tuple[AccountActor, list[Any]]]:
    """A started AccountActor on the issuer's token; yields it and what it published."""
    state = AccountState(
        snapshot=AccountSnapshot(account_id=ACCOUNT_ID, label="acct"),
        chatgpt_account_id="chatgpt-acct",
    )
    published: list[AccountSnapshot] = []
    actor = AccountActor(
        state,
        Mailbox(64, name="account:acct"),
        UpstreamPool("http://127.0.0.1:9"),  # never used: the "upstream" is the issuer
        publish=published.append,
        load_credentials=issuer.load,
        refresh_credentials=issuer.refresh,
        clock=wall,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield actor, published
        nursery.cancel_scope.cancel()


async def lease(actor: AccountActor) -> m.Lease | None:
    return await call(actor.mailbox, lambda reply: m.Confirm(reply), timeout=5)


async def one_request(actor: AccountActor, issuer: FakeIssuer) -> bool:
    """Lease, "send" upstream, release: did the upstream accept the lease's token?"""
    granted = await lease(actor)
    assert granted is not None, "the account refused a lease"
    accepted = issuer.accepts(granted.access_token)
    outcome = m.Outcome(m.OK, 200) if accepted else m.Outcome(m.UNAUTHORIZED, 401)
    assert actor.mailbox.try_send(m.Release(granted.lease_id, outcome))
    return accepted


async def test_an_hour_of_traffic_on_short_lived_tokens_never_meets_an_expired_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ttl = 5.0
    # Three isolated transient refresh failures spread over the hour.
    issuer = FakeIssuer(ttl, fail={10: "transient", 300: "transient", 700: "transient"})
    rejected: list[float] = []
    served = 0
    with trio.fail_after(4000):
        async with running_actor(issuer) as (actor, _):
            while trio.current_time() < 3600.0:
                await trio.sleep(0.5)
                if not await one_request(actor, issuer):
                    rejected.append(trio.current_time())
                served += 1
            await trio.testing.wait_all_tasks_blocked()  # the last release is handled
            assert actor.state.snapshot.lifecycle == "active"
            assert actor.state.leases == {}
    assert served == 7200
    assert rejected == [], f"requests met an expired token at {rejected[:5]}"

    # Refreshes came at 80 % of each token's life (plus the OAuth call's own time)...
    ok = issuer.call_times("ok")
    failed = issuer.call_times("transient")
    assert len(failed) == 3
    cycle = REFRESH_AHEAD_FRACTION * ttl + REFRESH_LATENCY_S
    assert len(ok) == pytest.approx(3600.0 / cycle, abs=5)
    calls = issuer.calls
    after_ok = [b[0] - a[0] for a, b in itertools.pairwise(calls) if a[1] == "ok"]
    assert len(after_ok) == len(ok) - 1
    assert statistics.median(after_ok) == pytest.approx(cycle, abs=0.01)
    assert min(after_ok) == pytest.approx(cycle, abs=0.01)  # never early: no refresh storm
    assert max(after_ok) == pytest.approx(cycle, abs=0.01)  # never late
    # ...and each transient failure was retried while the old token still lived.
    for when in failed:
        retry = next(t for t in ok if t > when)
        assert retry - when < ttl * (1 - REFRESH_AHEAD_FRACTION)


async def test_a_permanent_refresh_failure_moves_the_account_to_reauth_required(
    autojump_clock: trio.testing.MockClock,
) -> None:
    issuer = FakeIssuer(60.0, fail={1: "refresh_token_reused"})
    with trio.fail_after(10_000):
        async with running_actor(issuer) as (actor, published):
            assert await one_request(actor, issuer)
            await trio.sleep(REFRESH_AHEAD_FRACTION * 60.0 + 1.0)  # the refresh-ahead fired
            assert issuer.call_times() == [pytest.approx(48.0)]
            assert actor.state.snapshot.lifecycle == "reauth_required"
            assert published[-1].lifecycle == "reauth_required"  # the supervisor heard it
            # Out of routing: no lease, and a 401's refresh request fails at once.
            assert await lease(actor) is None
            with pytest.raises(RefreshUnavailable):
                await call(
                    actor.mailbox,
                    lambda reply: m.RefreshNow(issuer.current, reply),
                    timeout=5,
                )
            # No retry loop against the OAuth server for a refresh token that is gone.
            await trio.sleep(3600.0)
            assert len(issuer.calls) == 1


async def test_a_stale_pause_from_the_database_does_not_hide_a_dead_login(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The lifecycle moves through its transition table: once the refresh token is known to
    be dead, a "paused" read from the database before that (a stale reload) is refused and
    the account stays reauth_required; a fresh login ("active") is followed."""
    issuer = FakeIssuer(60.0, fail={1: "refresh_token_reused"})
    with trio.fail_after(10_000):
        async with running_actor(issuer) as (actor, published):
            await trio.sleep(REFRESH_AHEAD_FRACTION * 60.0 + 1.0)
            assert actor.state.snapshot.lifecycle == "reauth_required"
            assert actor.mailbox.try_send(m.SetLifecycle("paused", 8))
            await trio.sleep(1.0)
            assert actor.state.snapshot.lifecycle == "reauth_required"
            assert actor.state.snapshot.max_in_flight == 8  # the rest of the message applies
            assert actor.mailbox.try_send(m.SetLifecycle("active"))
            await trio.sleep(1.0)
            assert published[-1].lifecycle == "active"


async def test_a_transient_refresh_failure_keeps_the_account_routable_and_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ttl = 3600.0
    issuer = FakeIssuer(ttl, fail={n: "transient" for n in range(1, 5)})
    first_token = issuer.current
    with trio.fail_after(10_000):
        async with running_actor(issuer) as (actor, _):
            while len(issuer.calls) < 5:  # four failures, then a success
                await trio.sleep(1.0)
                # Routable all along, on the old token that still lives.
                granted = await lease(actor)
                assert granted is not None
                assert granted.access_token == first_token or len(issuer.calls) == 5
                assert issuer.accepts(granted.access_token)
                actor.mailbox.try_send(m.Release(granted.lease_id, m.Outcome(m.OK, 200)))
                assert actor.state.snapshot.lifecycle == "active"
            await trio.sleep(REFRESH_LATENCY_S + 0.1)
            assert actor.state.refresh_failures == 0  # the success reset the backoff
            new_token = issuer.current
            assert new_token != first_token
            granted = await lease(actor)
            assert granted is not None and granted.access_token == new_token
            actor.mailbox.try_send(m.Release(granted.lease_id, m.Outcome(m.OK, 200)))

            # The next refresh-ahead is due at 80 % of the new token's life again.
            issued = issuer.finished[-1]
            await trio.sleep(REFRESH_AHEAD_FRACTION * ttl + 1.0)
            assert issuer.call_times()[-1] == pytest.approx(issued + REFRESH_AHEAD_FRACTION * ttl)

    starts = issuer.call_times()
    assert starts[0] == pytest.approx(REFRESH_AHEAD_FRACTION * ttl)
    # The pause after each failure (from the failed call's end to the next call) grows.
    pauses = [start - end for end, start in zip(issuer.finished[:4], starts[1:5], strict=True)]
    assert pauses == pytest.approx([REFRESH_RETRY_FIRST_S * 2**n for n in range(4)])
    assert jwt_expiry(first_token) == pytest.approx(EPOCH + ttl)
