"""The attempt loop (pooler/web/attempts.py), once for every route: a real PoolSupervisor
and AccountActors (credentials in memory, no database) lease the accounts; the upstream is
a scripted exchange, one answer per call, per account. What each route does with an
upstream answer is tested with the route (tests/integration)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.lowlevel

from pooler.actors import messages as m
from pooler.actors.account import Credentials, RefreshResult
from pooler.actors.pool import AccountConfig, AccountDeps, PoolSupervisor, RuntimeConfig
from pooler.actors.runtime import Mailbox, call
from pooler.errors import (
    NoEligibleBackend,
    PinnedContinuationUnavailable,
    UpstreamError,
    UsageLimitReached,
)
from pooler.routing.choose import PoolPolicy
from pooler.web.attempts import Attempt, run_attempts
from pooler.web.leasing import LeaseAttempts, account_headers, continuity_digest, pin
from pooler.web.request_record import RequestRecord
from pooler.web.settings import GatewaySettings

POOL = "pool-1"
LABELS = ("a", "b", "c")
RESETS_IN = 600.0


@dataclass
class Gw:
    """What the loop needs of the gateway."""

    pool_mailbox: Mailbox[Any]
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    lease_decisions: Counter[str] = field(default_factory=Counter)


@dataclass
class Upstream:
    """A scripted upstream: per account label, the answers of its successive calls
    ("ok", "500", "401", "usage", "400", "bytes-then-500", "raise"); "ok" once a script
    is spent. `in_order`: answers by call, whatever the account. Records (label, token)
    of every call."""

    scripts: dict[str, list[str]]
    in_order: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def exchange(self, record: RequestRecord, attempt: Attempt) -> None:
        lease = attempt.lease
        self.calls.append((lease.label, dict(account_headers(lease))[b"authorization"].decode()))
        script = self.in_order or self.scripts.get(lease.label)
        answer = script.pop(0) if script else "ok"
        await trio.lowlevel.checkpoint()
        if answer == "ok":
            attempt.ended(m.Outcome(m.OK, 200))
        elif answer == "500":
            attempt.failed(m.Outcome(m.SERVER_ERROR, 500), "upstream_server_error")
        elif answer == "401":
            attempt.failed(m.Outcome(m.UNAUTHORIZED, 401), "unauthorized")
        elif answer == "usage":
            outcome = m.Outcome(m.USAGE_LIMIT, 429, resets_at=time.time() + RESETS_IN)
            attempt.failed(outcome, "usage_limit_reached")
        elif answer == "400":  # the upstream refused the request itself: relayed
            attempt.ended(m.Outcome(m.CLIENT_ERROR, 400), "upstream_400")
        elif answer == "bytes-then-500":
            record.mark_first_byte()
            attempt.failed(m.Outcome(m.SERVER_ERROR, 500), "upstream_server_error")
        elif answer == "raise":
            raise RuntimeError("the exchange broke")


@dataclass
class Pool:
    gw: Gw
    supervisor: PoolSupervisor
    refreshes: list[str]

    def label_ids(self) -> dict[str, str]:
        return {h.snapshot.label: a for a, h in self.supervisor.accounts.items()}

    async def run(
        self,
        upstream: Upstream,
        *,
        budget: int = 3,
        hard_key: bytes | None = None,
        record: RequestRecord | None = None,
    ) -> tuple[RequestRecord, LeaseAttempts]:
        record = record or RequestRecord("req-1", "responses", "http")
        attempts = LeaseAttempts(POOL, (), hard_key)

        async def exchange(attempt: Attempt) -> None:
            await upstream.exchange(record, attempt)

        try:
            await run_attempts(self.gw, attempts, record, exchange, budget=budget)
        finally:
            await self.settled()
        return record, attempts

    async def settled(self) -> None:
        """Every lease went back to its account."""
        with trio.fail_after(5):
            while any(h.snapshot.in_flight for h in self.supervisor.accounts.values()):
                await trio.sleep(0.01)


@asynccontextmanager
async def open_pool(
    lifecycles: dict[str, str] | None = None, refresh: Callable[[str], str | None] | None = None
) -> AsyncIterator[Pool]:
    refreshes: list[str] = []

    async def load(account_id: str) -> Credentials:
        return Credentials(f"token-{account_id}", None, None)

    async def refreshed(account_id: str, stale: str) -> RefreshResult:
        refreshes.append(account_id)
        token = refresh(account_id) if refresh else f"fresh-{account_id}"
        return RefreshResult(token, error=None if token else "refused")

    supervisor = PoolSupervisor(AccountDeps("http://127.0.0.1:9/codex", load, refreshed))
    accounts = {
        f"id-{label}": AccountConfig(
            f"id-{label}", label, f"chatgpt-{label}", (lifecycles or {}).get(label, "active"), None
        )
        for label in LABELS
    }
    config = RuntimeConfig(
        pools={POOL: PoolPolicy(POOL)},
        accounts=accounts,
        assignments={POOL: tuple(accounts)},
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with trio.fail_after(5):
            await call(supervisor.mailbox, lambda reply: m.ApplyConfig(config, reply), timeout=5)
        yield Pool(Gw(supervisor.mailbox), supervisor, refreshes)
        nursery.cancel_scope.cancel()


def outcomes(record: RequestRecord) -> list[tuple[str, str]]:
    return [(a.account_label, a.outcome) for a in record.attempts]


async def test_fails_over_before_the_first_byte() -> None:
    async with open_pool() as pool:
        upstream = Upstream({}, in_order=["500", "500", "ok"])
        record, _ = await pool.run(upstream)
    assert len({label for label, _ in upstream.calls}) == 3  # three accounts, in turn
    assert [kind for _, kind in outcomes(record)] == [m.SERVER_ERROR, m.SERVER_ERROR, m.OK]
    assert record.retries == 2 and record.account_label == upstream.calls[-1][0]
    failed = {label for label, kind in outcomes(record) if kind == m.SERVER_ERROR}
    assert record.exclusions == {label: "upstream_server_error" for label in failed}


async def test_the_budget_bounds_the_accounts_then_502_with_retry_after() -> None:
    async with open_pool() as pool:
        upstream = Upstream({label: ["500"] for label in LABELS})
        with pytest.raises(UpstreamError) as raised:
            await pool.run(upstream, budget=1)
    error = raised.value
    assert (error.status, error.code) == (502, "upstream_error")
    retry_after = GatewaySettings().no_backend_retry_after_s
    assert dict(error.headers())[b"retry-after"] == b"%d" % retry_after
    assert len(upstream.calls) == 2 and len({label for label, _ in upstream.calls}) == 2


async def test_a_401_refreshes_once_and_asks_the_same_account_without_spending_budget() -> None:
    async with open_pool() as pool:
        upstream = Upstream({label: ["401"] for label in LABELS})
        record, _ = await pool.run(upstream, budget=0)
    (label, stale), (again, fresh) = upstream.calls
    assert label == again and stale != fresh and fresh.startswith("Bearer fresh-")
    assert outcomes(record) == [(label, m.UNAUTHORIZED), (label, m.OK)]
    assert record.retries == 1 and len(pool.refreshes) == 1


async def test_a_second_401_or_a_failed_refresh_moves_on() -> None:
    async with open_pool(refresh=lambda account_id: None) as pool:
        upstream = Upstream({}, in_order=["401", "401", "ok"])
        record, attempts = await pool.run(upstream)
    first, second, _ = (label for label, _ in upstream.calls)
    assert first != second  # the refresh failed: not the same account again
    assert attempts.exclusions == {first: "unauthorized", second: "unauthorized"}
    assert record.attempts[-1].outcome == m.OK and len(pool.refreshes) == 2


async def test_every_account_out_of_quota_is_429_with_its_earliest_reset() -> None:
    async with open_pool() as pool:
        upstream = Upstream({label: ["usage"] for label in LABELS})
        started = time.time()
        with pytest.raises(UsageLimitReached) as raised:
            await pool.run(upstream)
    error = raised.value
    assert (error.status, error.code) == (429, "usage_limit_reached")
    assert started + RESETS_IN - 5 < error.extra["resets_at"] <= time.time() + RESETS_IN
    assert b"retry-after" in dict(error.headers())


async def test_a_hard_pin_whose_account_cannot_serve_is_409() -> None:
    async with open_pool() as pool:
        key = continuity_digest("response_id", "resp_1")
        pin(pool.gw.pool_mailbox, POOL, (key,), pool.label_ids()["b"], hard=True)
        upstream = Upstream({"b": ["usage"]})
        with pytest.raises(PinnedContinuationUnavailable) as raised:
            await pool.run(upstream, hard_key=key)
    assert raised.value.status == 409
    assert [label for label, _ in upstream.calls] == ["b"]  # never another account


async def test_nothing_eligible_is_503_with_retry_after_and_the_exclusions() -> None:
    paused = dict.fromkeys(LABELS, "paused")
    async with open_pool(paused) as pool:
        upstream = Upstream({})
        record = RequestRecord("req-1", "responses", "http")
        attempts = LeaseAttempts(POOL, ())

        async def exchange(attempt: Attempt) -> None:
            await upstream.exchange(record, attempt)

        with pytest.raises(NoEligibleBackend) as raised:
            await run_attempts(pool.gw, attempts, record, exchange, budget=3)
    assert (raised.value.status, raised.value.code) == (503, "no_eligible_backend")
    assert b"retry-after" in dict(raised.value.headers())
    assert upstream.calls == [] and record.attempts == []
    assert record.exclusions == dict.fromkeys(LABELS, "not_active")


async def test_a_relayed_refusal_and_a_failure_after_the_first_byte_end_the_loop() -> None:
    async with open_pool() as pool:
        for answer in ("400", "bytes-then-500"):
            upstream = Upstream({label: [answer] for label in LABELS})
            record, _ = await pool.run(upstream)
            assert len(upstream.calls) == 1 and record.retries == 0


async def test_an_exchange_that_raises_releases_its_lease_as_cancelled() -> None:
    async with open_pool() as pool:
        upstream = Upstream({label: ["raise"] for label in LABELS})
        record = RequestRecord("req-2", "responses", "http")
        with pytest.raises(RuntimeError):
            await pool.run(upstream, record=record)  # settled(): the lease went back
    assert len(upstream.calls) == 1
    assert [a.outcome for a in record.attempts] == [m.CANCELLED]
