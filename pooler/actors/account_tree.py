"""The PoolSupervisor's subtree: one guarded AccountActor per account, started and stopped.

Each account runs under `supervise` with its own `RestartBudget`; past that budget it alone
leaves routing for a cool-off and then gets a fresh budget (`_guard`), so one broken account
never takes the PoolSupervisor down. An `AccountHandle` (its state, mailbox and upstream
pool) outlives both the actor's incarnations and a restart of the PoolSupervisor itself:
`restart_all` starts the same handles again under a new nursery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio

from pooler.actors.account import (
    AccountActor,
    AccountState,
    FetchUsage,
    LoadCredentials,
    PersistQuota,
    RefreshCredentials,
)
from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import (
    Mailbox,
    Supervisor,
    SupervisorEscalation,
    SupervisorStats,
    supervise,
)
from pooler.instance_settings import InstanceSettings
from pooler.routing.snapshot import AccountSnapshot
from pooler.upstream.http1 import UpstreamPool

log = logging.getLogger("pooler.actors.pool")

ACCOUNT_MAILBOX_CAPACITY = 1024
UPSTREAM_MIN_CONNECTIONS = 1024
UPSTREAM_MAX_IDLE = 128
ESCALATION_COOLOFF_S = 60.0


@dataclass(slots=True)
class AccountHandle:
    state: AccountState
    mailbox: Mailbox[Any]
    upstream: UpstreamPool
    actor: AccountActor
    stats: SupervisorStats = field(default_factory=lambda: SupervisorStats("account"))

    @property
    def snapshot(self) -> AccountSnapshot:
        return self.state.snapshot


@dataclass(slots=True)
class AccountDeps:
    upstream_base_url: str
    load_credentials: LoadCredentials
    refresh_credentials: RefreshCredentials
    persist_quota: PersistQuota | None = None
    fetch_usage: FetchUsage | None = None
    restart_budget: Callable[[], RestartBudget] = lambda: RestartBudget(5, 60.0)


class AccountTree:
    """Starts, guards and stops the AccountActors; `accounts` is shared with the owner."""

    def __init__(
        self,
        deps: AccountDeps,
        changed: Callable[[str], None],
        settings: Callable[[], InstanceSettings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deps = deps
        self.accounts: dict[str, AccountHandle] = {}
        self.crashes = 0
        self.escalations = 0
        self._changed = changed
        self._settings = settings
        self._clock = clock
        self._supervisor: Supervisor | None = None

    def bind(self, nursery: trio.Nursery) -> None:
        """Run the accounts in ``nursery`` from now on (one per PoolSupervisor incarnation)."""
        self._supervisor = Supervisor(nursery, on_crash=self._on_crash)

    async def start(self, snapshot: AccountSnapshot, chatgpt_account_id: str) -> None:
        """A new account: build its handle and start its actor."""
        state = AccountState(snapshot=snapshot, chatgpt_account_id=chatgpt_account_id)
        mailbox: Mailbox[Any] = Mailbox(ACCOUNT_MAILBOX_CAPACITY, name=f"account:{snapshot.label}")
        # One upstream connection per lease: the in-flight cap, not the pool, is the limit.
        upstream = UpstreamPool(
            self.deps.upstream_base_url,
            max_connections=max(snapshot.max_in_flight, UPSTREAM_MIN_CONNECTIONS),
            max_idle=UPSTREAM_MAX_IDLE,
        )
        actor = AccountActor(
            state,
            mailbox,
            upstream,
            publish=partial(self._published, snapshot.account_id),
            load_credentials=self.deps.load_credentials,
            refresh_credentials=self.deps.refresh_credentials,
            persist_quota=self.deps.persist_quota,
            fetch_usage=self.deps.fetch_usage,
            settings=self._settings,
            clock=self._clock,
        )
        handle = AccountHandle(state, mailbox, upstream, actor)
        self.accounts[snapshot.account_id] = handle
        await self._run(handle)

    async def restart_all(self) -> None:
        """After a restart of the owner: the same accounts, state and leases, run again."""
        for handle in list(self.accounts.values()):
            await self._run(handle)

    async def stop(self, account_id: str) -> AccountHandle:
        """Stop the account's actor for good and close its upstream pool."""
        assert self._supervisor is not None
        handle = self.accounts.pop(account_id)
        if account_id in self._supervisor.children:
            await self._supervisor.stop_child(account_id)
        with trio.move_on_after(2, shield=True):
            await handle.upstream.aclose()
        return handle

    async def aclose_upstreams(self) -> None:
        for handle in self.accounts.values():
            with trio.move_on_after(2, shield=True):
                await handle.upstream.aclose()

    async def _run(self, handle: AccountHandle) -> None:
        assert self._supervisor is not None
        try:
            await self._supervisor.start_child(
                handle.snapshot.account_id,
                partial(self._guard, handle),
                budget=self.deps.restart_budget(),
            )
        except Exception as exc:
            log.error("account %s could not start: %s", handle.snapshot.label, type(exc).__name__)
            self._mark_dead(handle)

    async def _guard(self, handle: AccountHandle, *, task_status: trio.TaskStatus[None]) -> None:
        """Supervise one account's actor; past its budget, out of routing for a cool-off."""
        status: trio.TaskStatus[None] = task_status
        while True:
            try:
                await supervise(
                    handle.snapshot.account_id,
                    handle.actor.run,
                    budget=self.deps.restart_budget(),
                    on_crash=self._on_crash,
                    stats=handle.stats,
                    task_status=status,
                )
                return
            except SupervisorEscalation as exc:
                log.error(
                    "account %s crashed past its restart budget (%s); out of routing for %.0f s",
                    handle.snapshot.label,
                    type(exc.__cause__).__name__,
                    ESCALATION_COOLOFF_S,
                )
                self.escalations += 1
                self._mark_dead(handle)
                status = trio.TASK_STATUS_IGNORED
                await trio.sleep(ESCALATION_COOLOFF_S)

    def _on_crash(self, name: str, exc: BaseException, restarts: int) -> None:
        self.crashes += 1
        handle = self.accounts.get(name)
        if handle is not None:
            self._mark_dead(handle)

    def _mark_dead(self, handle: AccountHandle) -> None:
        handle.state.snapshot = replace(handle.state.snapshot, alive=False)
        self._changed(handle.snapshot.account_id)

    def _published(self, account_id: str, snapshot: AccountSnapshot) -> None:
        self._changed(account_id)
