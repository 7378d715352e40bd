"""Routing faults in virtual time: the PoolSupervisor and its AccountActors read one
injected clock, so a circuit that stays open for a minute is tested in no time under
Trio's MockClock. Real actors and router; only the credentials loader is a stub (no
upstream request is made: the test leases and releases as a handler would)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pooler.actors import messages as m
from pooler.actors.account import Credentials, RefreshResult
from pooler.actors.account_tree import AccountDeps
from pooler.actors.pool import AccountConfig, PoolSupervisor, RuntimeConfig
from pooler.actors.runtime import call
from pooler.instance_settings import InstanceSettings
from pooler.routing.choose import PoolPolicy

EPOCH = 1_800_000_000.0  # mock time 0, as epoch seconds
POOL = "pool"
OPEN_S = 60.0


def wall() -> float:
    return EPOCH + trio.current_time()


async def load_credentials(account_id: str) -> Credentials:
    return Credentials(f"token-{account_id}", None, None)  # no expiry: no refresh timer


async def refresh_credentials(account_id: str, stale_token: str) -> RefreshResult:
    raise AssertionError("no refresh in this test")


def config() -> RuntimeConfig:
    accounts = {a: AccountConfig(a, a.upper(), f"chatgpt-{a}", "active", "plus") for a in "ab"}
    settings = InstanceSettings(
        circuit_failure_threshold=2, circuit_open_seconds=OPEN_S, demotion_seconds=0
    )
    return RuntimeConfig({POOL: PoolPolicy(POOL)}, accounts, {POOL: ("a", "b")}, {}, settings)


async def lease_of_a(supervisor: PoolSupervisor) -> m.LeaseGranted:
    """A lease as a handler asks for one, with B excluded (as after B failed)."""
    return await call(
        supervisor.mailbox,
        lambda reply: m.LeaseRequest(POOL, (), frozenset({"b"}), reply),
        timeout=5,
    )


async def test_a_circuit_opens_and_a_probe_closes_it_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deps = AccountDeps("http://127.0.0.1:9", load_credentials, refresh_credentials)
    supervisor = PoolSupervisor(deps, clock=wall)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await call(supervisor.mailbox, lambda r: m.ApplyConfig(config(), r), timeout=5)
            account_a = supervisor.accounts["a"]

            for _ in range(2):  # two upstream 500s in a row on A open its circuit
                granted = await lease_of_a(supervisor)
                assert granted.lease is not None and granted.lease.label == "A"
                release = m.Release(granted.lease.lease_id, m.Outcome(m.SERVER_ERROR, 500))
                assert granted.lease.mailbox.try_send(release)
                await trio.sleep(0.01)
            circuit = account_a.state.circuits["responses"]
            assert circuit.state == "open"
            assert circuit.open_until == pytest.approx(wall() + OPEN_S, abs=0.1)

            # Open for a minute of wall time: nothing for A, and routing says why.
            await trio.sleep(OPEN_S - 1.0)
            granted = await lease_of_a(supervisor)
            assert granted.lease is None and granted.choice.exclusions["A"] == "circuit_open"

            # Past it, one half-open probe goes to A; its success closes the circuit.
            await trio.sleep(1.0)
            granted = await lease_of_a(supervisor)
            assert granted.lease is not None and granted.lease.probe
            release = m.Release(granted.lease.lease_id, m.Outcome(m.OK, 200))
            assert granted.lease.mailbox.try_send(release)
            await trio.sleep(0.01)
            assert circuit.state == "closed" and account_a.snapshot.circuits == {}
            nursery.cancel_scope.cancel()
    await supervisor.aclose()
