"""Routing under faults: circuits, demotion, crashes and the refresh race, on the real stack.

Every test runs the emulator, PostgreSQL and the gateway, speaks HTTP (or the actors'
own protocol) to them, and ends by checking that no task, thread or socket was left behind.
Circuit and demotion timers run on wall time in the gateway, so these tests shorten them
through instance settings instead of sleeping through the defaults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import trio
from harness import Stack, open_stack, open_two_nodes, parse_sse, responses_body
from helpers import (
    RESPONSES,
    arm,
    complete,
    event_types,
    handle_of,
    lease_choice,
    log_row,
    no_leaks,
    served,
    set_instance_settings,
    slow,
    stream_and_leave,
)

from pooler.actors import messages as m
from pooler.actors.account import RefreshResult
from pooler.actors.runtime import call
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.routing.circuit import CLOSED, OPEN
from pooler.store.credentials import refresh_lock_key
from pooler.web import runtime_store
from pooler.web.settings import GatewaySettings

CIRCUIT = "responses"


def circuit_of(stack: Stack, account_id: str) -> Any:
    """The account's `responses` Circuit as its actor holds it (None: never failed)."""
    return handle_of(stack, account_id).state.circuits.get(CIRCUIT)


def accounts(stack: Stack) -> list[Any]:
    """Every account's handle in the PoolSupervisor."""
    return list(stack.gateway.pool_supervisor.accounts.values())


async def wait_until(deadline: float) -> None:
    """Sleep until wall time `deadline` (circuit and demotion times are epoch seconds)."""
    await trio.sleep(max(0.0, deadline - time.time()))


# --- 1. a burst of 500s opens the circuit; a half-open probe decides ------------------------


async def test_a_burst_of_500s_opens_the_circuit_and_a_half_open_probe_closes_it(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=2) as stack:
        # Demotion off, so the failing account stays first in line and meets the traffic.
        await set_instance_settings(
            stack, circuit_failure_threshold=2, circuit_open_seconds=1.5, demotion_seconds=0
        )
        a, b = (account.label for account in stack.emulator.accounts)
        a_id = (await stack.account_ids())[a]
        await arm(stack, a, "server_error_500", times=100)
        async with stack.client() as client:
            with trio.fail_after(30):
                # Requests until A's circuit opens; every client is answered by B.
                for _ in range(10):
                    await complete(client)
                    circuit = circuit_of(stack, a_id)
                    if circuit is not None and circuit.state == OPEN:
                        break
                assert circuit is not None and circuit.state == OPEN
                upstream = await served(stack)
                assert [u for u in upstream if u[0] == a] == [(a, 500, "server_error_500")] * 2
                assert {u[0] for u in upstream if u[1] == 200} == {b}
                open_until = circuit.open_until
                view = handle_of(stack, a_id).snapshot.circuits[CIRCUIT]
                assert view.open_until == open_until > time.time()
                granted = await lease_choice(stack)  # routing leaves A out, and says why
                assert [c.label for c in granted.choice.candidates] == [b]
                assert granted.choice.exclusions == {a: "circuit_open"}

                # While open, A gets nothing: the gateway does not even try it.
                sent_while_open = 0
                while time.time() < open_until - 0.3 and sent_while_open < 5:
                    await complete(client)
                    sent_while_open += 1
                    await trio.sleep(0.02)
                assert sent_while_open >= 2
                assert await served(stack) == [*upstream, *[(b, 200, None)] * sent_while_open]

                # Past open_seconds, one probe goes to A; it fails: open again, for longer.
                await wait_until(open_until + 0.05)
                await complete(client)
                assert (await served(stack))[-2:] == [(a, 500, "server_error_500"), (b, 200, None)]
                assert circuit.state == OPEN and circuit.open_until > open_until
                reopened_until = circuit.open_until
                assert handle_of(stack, a_id).snapshot.circuits[CIRCUIT].open_until == (
                    reopened_until
                )
                await complete(client)  # still open: B answers, A is not tried
                assert (await served(stack))[-1] == (b, 200, None)

                # A recovers (the fault is gone); past open_seconds the probe succeeds and
                # closes the circuit, and A serves again.
                await stack.control("POST", "reset")
                await wait_until(reopened_until + 0.05)
                await complete(client)
                assert await served(stack) == [(a, 200, None)]
                assert circuit.state == CLOSED and circuit.failures == 0
                assert handle_of(stack, a_id).snapshot.circuits == {}
                for _ in range(2):
                    await complete(client)
                assert (a, 200, None) in (await served(stack))[1:]
                assert handle_of(stack, a_id).state.circuit_transitions == 3
        assert all(h.snapshot.in_flight == 0 for h in accounts(stack))


# --- 2. a client that leaves is not the account's fault ------------------------------------


async def test_cancelled_streams_leave_the_circuit_closed_and_release_their_lease(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=2) as stack:
        # One failure would open the circuit: a cancel counted as one would show at once.
        await set_instance_settings(stack, circuit_failure_threshold=1)
        async with stack.client() as client:
            with trio.fail_after(10):
                await complete(client, prompt_cache_key="leaving")
        label = (await served(stack))[-1][0]
        account_id = (await stack.account_ids())[label]
        handle = handle_of(stack, account_id)

        request_ids = []
        with trio.fail_after(20):
            for _ in range(3):
                # 12 deltas, 100 ms before each event: the whole stream would take ~1.3 s.
                request_ids.append(
                    await stream_and_leave(
                        stack, prompt_cache_key="leaving", client_metadata=slow(12, 100)
                    )
                )
                left_at = time.monotonic()
                # The upstream request is cut and the lease comes back within a second.
                with trio.fail_after(1.0):
                    while handle.upstream.active_connections or handle.snapshot.in_flight:
                        await trio.sleep(0.01)
                assert time.monotonic() - left_at < 1.0
        for request_id in request_ids:
            assert await log_row(stack, request_id, "status_code", "outcome") == (
                499,
                "client_disconnected",
            )

        # Neither a circuit failure nor a demotion: the account is as healthy as before.
        circuit = circuit_of(stack, account_id)
        assert circuit is None or (circuit.state == CLOSED and circuit.failures == 0)
        assert handle.snapshot.circuits == {}
        assert handle.snapshot.demoted_until is None
        assert handle.state.leases == {}
        async with stack.client() as client:
            with trio.fail_after(10):
                await complete(client, prompt_cache_key="leaving")
        upstream = await served(stack)
        assert [u[0] for u in upstream] == [label] * 5  # the conversation never moved
        assert upstream[-1] == (label, 200, None)


# --- 3. a stalled upstream: failover before the head, response.failed after it -------------


async def spread_traffic(stack: Stack, client: httpx.AsyncClient) -> tuple[str, str]:
    """One request pinned by key "stuck" and one without a key: both accounts have served
    once, so the strategy alone (least_used) would put the pinned one (chosen longest ago)
    first next time. Returns (the pinned account's label, the other's)."""
    await complete(client, prompt_cache_key="stuck")
    await complete(client)
    (first, _, _), (second, _, _) = await served(stack)
    assert first != second
    return first, second


async def assert_demoted_not_excluded(stack: Stack, demoted: str, other: str) -> None:
    """`demoted` is at the back of the order, still a candidate; the next lease is `other`'s."""
    ids = await stack.account_ids()
    snapshot = handle_of(stack, ids[demoted]).snapshot
    assert snapshot.demoted_until is not None and snapshot.demoted_until > time.time()
    granted = await lease_choice(stack)
    assert granted.lease is not None and granted.lease.label == other
    assert [c.label for c in granted.choice.candidates] == [other, demoted]
    assert demoted not in granted.choice.exclusions


async def test_a_stall_before_the_head_fails_over_and_demotes_the_account(
    db_url: str, tmp_path: Path
) -> None:
    settings = GatewaySettings(upstream_first_byte_timeout_s=0.5)
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=2, settings=settings) as stack:
        async with stack.client() as client:
            with trio.fail_after(20):
                stalled, other = await spread_traffic(stack, client)
                await arm(stack, stalled, "stall", stall_seconds=5)
                began = time.monotonic()
                response = await complete(client, prompt_cache_key="stuck")
                assert 0.5 <= time.monotonic() - began < 2.0
                assert (await served(stack))[-2:] == [(stalled, None, "stall"), (other, 200, None)]
                assert await log_row(
                    stack, response.headers["x-request-id"], "retries", "outcome"
                ) == (1, "completed")

                await assert_demoted_not_excluded(stack, stalled, other)
                stalled_id = (await stack.account_ids())[stalled]
                assert circuit_of(stack, stalled_id).failures == 1  # counted, still closed
                await complete(client)
                assert (await served(stack))[-1] == (other, 200, None)

                # Demoted is not excluded: when the other account fails, it answers.
                await arm(stack, other, "server_error_500")
                await complete(client)
                assert (await served(stack))[-2:] == [
                    (other, 500, "server_error_500"),
                    (stalled, 200, None),
                ]
        assert all(h.upstream.active_connections == 0 for h in accounts(stack))


async def test_a_stall_mid_stream_fails_the_stream_and_demotes_the_account(
    db_url: str, tmp_path: Path
) -> None:
    settings = GatewaySettings(upstream_idle_timeout_s=0.3)
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=2, settings=settings) as stack:
        async with stack.client() as client:
            with trio.fail_after(20):
                stalled, other = await spread_traffic(stack, client)
                # The head comes at once, then a second of silence before each event.
                body = responses_body(prompt_cache_key="stuck", client_metadata=slow(4, 1000))
                began = time.monotonic()
                response = await client.post(RESPONSES, json=body)
                assert time.monotonic() - began < 1.0  # cut at the idle deadline
                assert response.status_code == 200
                events = parse_sse(response.text)
                assert [e["type"] for e in events] == ["response.failed"]
                assert events[0]["response"]["error"]["code"] == "stream_idle_timeout"
                assert (await served(stack))[-1] == (stalled, 200, None)  # never replayed
                assert await log_row(
                    stack, response.headers["x-request-id"], "outcome", "error_code"
                ) == ("stream_failed", "stream_idle_timeout")

                await assert_demoted_not_excluded(stack, stalled, other)
                stalled_id = (await stack.account_ids())[stalled]
                assert circuit_of(stack, stalled_id).failures == 1
                await complete(client)
                assert (await served(stack))[-1] == (other, 200, None)
        assert all(h.upstream.active_connections == 0 for h in accounts(stack))


# --- 4. the upstream cuts a stream --------------------------------------------------------


async def test_a_mid_stream_disconnect_fails_the_stream_and_counts_against_the_circuit(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=2) as stack:
        await set_instance_settings(stack, circuit_failure_threshold=2, circuit_open_seconds=60)
        async with stack.client() as client:
            with trio.fail_after(20):
                await complete(client, prompt_cache_key="cut")
                cut = (await served(stack))[-1][0]
                cut_id = (await stack.account_ids())[cut]
                assert circuit_of(stack, cut_id) is None

                for failures in (1, 2):
                    await arm(stack, cut, "disconnect_mid_stream")
                    body = responses_body(prompt_cache_key="cut")
                    response = await client.post(RESPONSES, json=body)
                    assert response.status_code == 200
                    types = event_types(response.text)
                    assert types[0] == "response.created" and types[-1] == "response.failed"
                    assert "response.completed" not in types
                    assert (await served(stack))[-1] == (cut, 200, "disconnect_mid_stream")
                    circuit = circuit_of(stack, cut_id)
                    if failures == 1:  # one failure counted, below the threshold
                        assert (circuit.state, circuit.failures) == (CLOSED, 1)
                        assert handle_of(stack, cut_id).snapshot.circuits == {}
                # The second one opened the circuit: the conversation moves, saying why.
                assert circuit.state == OPEN
                assert handle_of(stack, cut_id).snapshot.circuits[CIRCUIT].open_until > (
                    time.time() + 50
                )
                response = await complete(client, prompt_cache_key="cut")
                moved_to = (await served(stack))[-1]
                assert moved_to[0] != cut and moved_to[1:] == (200, None)
                continuity, exclusions = await log_row(
                    stack, response.headers["x-request-id"], "continuity", "exclusions"
                )
                assert continuity == "moved"
                assert exclusions == {cut: "circuit_open"}


# --- 5. an AccountActor dies with requests in flight ----------------------------------------


async def test_a_killed_account_actor_restarts_without_losing_or_leaking_a_lease(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=3) as stack:
        supervisor = stack.gateway.pool_supervisor
        async with stack.client() as client:
            with trio.fail_after(10):
                await complete(client, prompt_cache_key="victim")
        victim = (await served(stack))[-1][0]
        victim_id = (await stack.account_ids())[victim]
        handle = handle_of(stack, victim_id)

        finished: dict[str, Any] = {}
        streaming = trio.Event()

        async def long_stream() -> None:
            # 20 deltas, 60 ms before each event: ~1.4 s, across the crash.
            body = responses_body(prompt_cache_key="victim", client_metadata=slow(20, 60))
            async with stack.client() as client, client.stream("POST", RESPONSES, json=body) as r:
                finished["request_id"] = r.headers["x-request-id"]
                raw = ""
                async for chunk in r.aiter_text():
                    raw += chunk
                    if "response.output_text.delta" in raw:
                        streaming.set()
                finished["types"] = event_types(raw)

        bystanders: list[int] = []

        async def bystander(i: int) -> None:
            async with stack.client() as client:
                body = responses_body(prompt_cache_key=f"bystander-{i}")
                bystanders.append((await client.post(RESPONSES, json=body)).status_code)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_stream)
                await streaming.wait()
                left = trio.Event()

                async def leaver() -> None:
                    finished["left"] = await stream_and_leave(
                        stack, prompt_cache_key="victim", client_metadata=slow(20, 60)
                    )
                    left.set()

                nursery.start_soon(leaver)
                while handle.snapshot.in_flight < 2:
                    await trio.sleep(0.01)
                crashed: bool = await call(
                    supervisor.mailbox, lambda r: m.CrashAccount(victim_id, r), timeout=5
                )
                assert crashed is True
                await left.wait()  # this client leaves while its account restarts
                for i in range(9):
                    nursery.start_soon(bystander, i)
                    await trio.sleep(0.02)
                # Restarted, with the leases of the requests still running.
                while not (handle.snapshot.alive and handle.stats.restarts == 1):
                    await trio.sleep(0.01)
                assert handle.snapshot.in_flight in (1, 2)

        assert supervisor.crashes == 1 and handle.stats.crashes == 1
        assert bystanders == [200] * 9
        answered_by = {u[0] for u in await served(stack) if u[1] == 200}
        assert answered_by >= {a.label for a in stack.emulator.accounts}
        assert all(h.stats.crashes == 0 for h in accounts(stack) if h is not handle)
        # The long stream finished in full; the leaver is logged as such.
        assert finished["types"][0] == "response.created"
        assert finished["types"][-1] == "response.completed"
        assert await log_row(stack, finished["request_id"], "status_code", "outcome") == (
            200,
            "completed",
        )
        assert await log_row(stack, finished["left"], "status_code", "outcome") == (
            499,
            "client_disconnected",
        )
        # Every lease came back, to whichever incarnation held the account then.
        handles = accounts(stack)
        with trio.fail_after(2):
            while any(h.snapshot.in_flight or h.upstream.active_connections for h in handles):
                await trio.sleep(0.01)
        assert all(h.state.leases == {} for h in accounts(stack))
        async with stack.client() as client:
            with trio.fail_after(10):
                await complete(client, prompt_cache_key="victim")
        assert (await served(stack))[-1] == (victim, 200, None)


# --- 7. two sessions, two nodes: one refresh --------------------------------------------


async def advisory_waiters(stack: Stack) -> int:
    """Sessions waiting for an advisory lock in this database."""
    return int(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]
        )
    )


class HeldRefreshLock:
    """An account's refresh lock, held from a session of its own for the length of a block,
    so that racers pile up on it and race for it the moment it goes."""

    def __init__(self, db_url: str, account_id: str) -> None:
        self._key = refresh_lock_key(UUID(account_id))
        self._url = db_url
        self._taken = threading.Event()
        self._release = threading.Event()

    def _hold(self) -> None:
        with psycopg.connect(self._url) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
            self._taken.set()
            self._release.wait(30)
            conn.rollback()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[trio.Nursery]:
        """Hold the lock while the block runs; a nursery for the racers, waited for after
        the lock is released."""
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(partial(trio.to_thread.run_sync, self._hold))
                await trio.to_thread.run_sync(self._taken.wait, 10)
                assert self._taken.is_set()
                yield nursery
            finally:
                self._release.set()


async def stored_token(stack: Stack, account_id: str) -> str:
    keyring = Keyring(stack.config.upstream_secret_key, stack.config.upstream_secret_keys_old)
    return str(
        await stack.database.run(
            lambda conn: runtime_store.load_access_token(conn, keyring, account_id)
        )
    )


async def lifecycle(stack: Stack, account_id: str) -> str:
    return str(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT lifecycle FROM upstream_accounts WHERE id = %s", (account_id,)
            ).fetchone()[0]
        )
    )


async def test_two_sessions_refreshing_one_stale_token_refresh_it_once(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path, accounts=1) as stack:
        [account_id] = (await stack.account_ids()).values()
        stale = await stored_token(stack, account_id)
        keyring = Keyring(stack.config.upstream_secret_key, stack.config.upstream_secret_keys_old)
        sessions = [Database.open(db_url, max_size=1), Database.open(db_url, max_size=1)]
        results: list[RefreshResult] = []

        def refresh(database: Database) -> None:
            with httpx.Client(timeout=10) as http:
                results.append(
                    database.run_sync(
                        lambda conn: runtime_store.refresh_account(
                            conn, keyring, http, stack.config.auth_base_url, account_id, stale
                        )
                    )
                )

        lock = HeldRefreshLock(db_url, account_id)
        try:
            with trio.fail_after(20):
                async with lock.held() as nursery:
                    for database in sessions:
                        nursery.start_soon(partial(trio.to_thread.run_sync, refresh, database))
                    # Both sessions wait on the account's lock with the same stale token;
                    # once it is released they race for it.
                    while await advisory_waiters(stack) < 2:
                        await trio.sleep(0.01)
        finally:
            for database in sessions:
                database.close()

        assert len(results) == 2
        fresh = results[0].access_token
        assert fresh is not None and fresh != stale
        assert results[1] == RefreshResult(fresh)
        refreshes = await stack.upstream_requests("/oauth/token")
        assert [r["status"] for r in refreshes] == [200]
        assert await stored_token(stack, account_id) == fresh
        assert await lifecycle(stack, account_id) == "active"


async def test_two_gateways_asked_to_refresh_one_stale_token_refresh_it_once(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_two_nodes(db_url, tmp_path, accounts=1) as (one, two):
        [account_id] = (await one.account_ids()).values()
        stale = await stored_token(one, account_id)
        answers: dict[str, str] = {}

        async def refresh_now(name: str, node: Stack) -> None:
            mailbox = handle_of(node, account_id).mailbox
            answers[name] = await call(
                mailbox, lambda reply: m.RefreshNow(stale, reply), timeout=15
            )

        with trio.fail_after(20):
            async with HeldRefreshLock(db_url, account_id).held() as nursery:
                nursery.start_soon(refresh_now, "one", one)
                nursery.start_soon(refresh_now, "two", two)
                while await advisory_waiters(one) < 2:  # both nodes' refreshes wait
                    await trio.sleep(0.01)

        fresh = answers["one"]
        assert fresh != stale and answers == {"one": fresh, "two": fresh}
        assert [r["status"] for r in await one.upstream_requests("/oauth/token")] == [200]
        assert await stored_token(one, account_id) == fresh
        assert await lifecycle(one, account_id) == "active"
        # Both nodes serve on the one new token; nobody refreshes again.
        with trio.fail_after(10):
            for node in (one, two):
                async with node.client() as client:
                    await complete(client)
        upstream = await one.upstream_requests()
        assert [(r["status"], r["token_fresh"]) for r in upstream] == [(200, True)] * 2
        assert len(await one.upstream_requests("/oauth/token")) == 1
