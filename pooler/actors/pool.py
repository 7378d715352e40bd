"""PoolSupervisor: the lease authority. Supervises every AccountActor and answers leases.

Each AccountActor publishes its eligibility snapshot into its `AccountHandle` (a single-
writer cell), so choosing never needs a round trip to every actor; the chosen actor stays
the authority and may refuse a `Confirm`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio

from pooler.actors import messages as m
from pooler.actors.account import AccountActor, AccountState, LoadCredentials, RefreshCredentials
from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import (
    Mailbox,
    Supervisor,
    SupervisorEscalation,
    SupervisorStats,
    supervise,
)
from pooler.routing.choose import PoolPolicy, choose_accounts
from pooler.routing.continuity import ContinuityMap
from pooler.routing.snapshot import AccountSnapshot, WindowState
from pooler.routing.strategies import ChoiceHistory
from pooler.upstream.http1 import UpstreamPool

log = logging.getLogger("pooler.actors.pool")

ACCOUNT_MAILBOX_CAPACITY = 1024
SUPERVISOR_MAILBOX_CAPACITY = 4096
UPSTREAM_MIN_CONNECTIONS = 1024
UPSTREAM_MAX_IDLE = 128
MAX_DIRTY_PINS = 100_000
ESCALATION_COOLOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class AccountConfig:
    account_id: str
    label: str
    chatgpt_account_id: str
    lifecycle: str
    plan_type: str | None
    primary: WindowState | None = None
    secondary: WindowState | None = None


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The part of the database the supervisor runs from (built by the SettingsCache)."""

    pools: dict[str, PoolPolicy]
    accounts: dict[str, AccountConfig]
    assignments: dict[str, tuple[str, ...]]  # pool id -> account ids
    max_in_flight: dict[str, int] = field(default_factory=dict)  # pool id -> per-account cap


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
    persist_quota: Callable[[str, Any], None] | None = None
    restart_budget: Callable[[], RestartBudget] = lambda: RestartBudget(5, 60.0)


class PoolSupervisor:
    def __init__(self, deps: AccountDeps, *, continuity_ttl: float = 6 * 3600.0) -> None:
        self.deps = deps
        self.mailbox: Mailbox[Any] = Mailbox(SUPERVISOR_MAILBOX_CAPACITY, name="pool-supervisor")
        self.accounts: dict[str, AccountHandle] = {}
        self.pools: dict[str, PoolPolicy] = {}
        self.assignments: dict[str, tuple[str, ...]] = {}
        self.continuity: dict[str, ContinuityMap] = {}
        self._continuity_ttl = continuity_ttl
        self._history = ChoiceHistory()
        self._supervisor: Supervisor | None = None
        self._dirty_pins: dict[tuple[str, bytes], tuple[str, float]] = {}
        self.dirty_pin_overflows = 0
        self.crashes = 0
        self.escalations = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._supervisor = Supervisor(nursery, on_crash=self._on_crash)
            task_status.started()
            try:
                async for message in self.mailbox.receive_channel:
                    if isinstance(message, m.ApplyConfig):
                        await self._apply(message.snapshot)
                        if message.reply_to is not None:
                            message.reply_to.send(None)
                    else:
                        self.handle(message)
            finally:
                for handle in self.accounts.values():
                    with trio.move_on_after(2, shield=True):
                        await handle.upstream.aclose()
                nursery.cancel_scope.cancel()

    # --- decisions (no await) ------------------------------------------------------------

    def handle(self, message: object) -> None:
        if isinstance(message, m.LeaseRequest):
            choice, candidates = self._choose(message)
            self._offer(message, choice, tuple(candidates), ())
        elif isinstance(message, m.Refused):
            offer = message.offer
            refused = (*offer.refused, offer.candidates[0].snapshot.label)
            self._offer(offer.request, offer.choice, offer.candidates[1:], refused)
        elif isinstance(message, m.PinConversation):
            cmap = self.continuity.get(message.pool_id)
            if cmap is not None:
                now = time.time()
                for key in message.continuity_keys:
                    cmap.pin(key, message.account_id, now)
                    self._note_dirty_pin(message.pool_id, key, message.account_id, now)
        elif isinstance(message, m.TakeDirtyPins):
            dirty, self._dirty_pins = self._dirty_pins, {}
            message.reply_to.send(
                [(pool, key, account, expiry) for (pool, key), (account, expiry) in dirty.items()]
            )
        elif isinstance(message, m.RestorePins):
            cmap = self.continuity.setdefault(message.pool_id, ContinuityMap(self._continuity_ttl))
            now = time.time()
            for key, account_id, expires_at in message.pins:
                cmap.restore(key, account_id, expires_at, now)
        elif isinstance(message, m.ListSnapshots):
            message.reply_to.send([h.snapshot for h in self.accounts.values()])
        elif isinstance(message, m.CrashAccount):
            handle = self.accounts.get(message.account_id)
            message.reply_to.send(handle is not None and handle.mailbox.try_send(m.InjectCrash()))

    def _offer(
        self,
        request: m.LeaseRequest,
        choice: Any,
        candidates: tuple[m.LeaseCandidate, ...],
        refused: tuple[str, ...],
    ) -> None:
        """Offer the request to the best candidate, which answers the requester itself."""
        while candidates:
            offer = m.Offer(request, choice, candidates, refused, self.mailbox)
            if candidates[0].mailbox.try_send(offer):
                return
            refused = (*refused, candidates[0].snapshot.label)  # its mailbox is full or closed
            candidates = candidates[1:]
        request.reply_to.send(m.LeaseGranted(choice, None, refused))

    def _note_dirty_pin(self, pool_id: str, key: bytes, account_id: str, now: float) -> None:
        """Remember a pin for the write-behind; bounded, what overflows waits for next time."""
        if len(self._dirty_pins) < MAX_DIRTY_PINS or (pool_id, key) in self._dirty_pins:
            self._dirty_pins[(pool_id, key)] = (account_id, now + self._continuity_ttl)
        else:
            self.dirty_pin_overflows += 1

    def _choose(self, request: m.LeaseRequest) -> tuple[Any, list[m.LeaseCandidate]]:
        policy = self.pools.get(request.pool_id) or PoolPolicy(request.pool_id)
        members = self.assignments.get(request.pool_id, ())
        snapshots = [self.accounts[a].snapshot for a in members if a in self.accounts]
        cmap = self.continuity.setdefault(request.pool_id, ContinuityMap(self._continuity_ttl))
        choice = choose_accounts(
            policy,
            snapshots,
            continuity=cmap,
            continuity_keys=request.continuity_keys,
            exclude=request.exclude,
            history=self._history,
            now=time.time(),
        )
        if choice.candidates:
            self._history.record(choice.candidates[0].account_id)
        candidates = [
            m.LeaseCandidate(s, self.accounts[s.account_id].mailbox) for s in choice.candidates
        ]
        return choice, candidates

    def _on_crash(self, name: str, exc: BaseException, restarts: int) -> None:
        self.crashes += 1
        handle = self.accounts.get(name)
        if handle is not None:
            handle.state.snapshot = replace(handle.state.snapshot, alive=False)

    # --- configuration -------------------------------------------------------------------

    async def _apply(self, config: RuntimeConfig) -> None:
        assert self._supervisor is not None
        self.pools = dict(config.pools)
        self.assignments = dict(config.assignments)
        caps: dict[str, int] = {}
        for pool_id, members in config.assignments.items():
            cap = config.max_in_flight.get(pool_id, 32)
            for account_id in members:
                caps[account_id] = max(caps.get(account_id, 0), cap)
        for account_id in [a for a in self.accounts if a not in config.accounts]:
            await self._stop_account(account_id)
        for account_id, account in config.accounts.items():
            handle = self.accounts.get(account_id)
            cap = caps.get(account_id, 32)
            if handle is None:
                await self._start_account(account, cap)
            elif (
                handle.snapshot.lifecycle != account.lifecycle
                or handle.snapshot.max_in_flight != cap
            ):
                handle.mailbox.try_send(m.SetLifecycle(account.lifecycle, cap))
        for pool_id in list(self.continuity):
            if pool_id not in self.pools:
                del self.continuity[pool_id]

    async def _start_account(self, account: AccountConfig, cap: int) -> None:
        assert self._supervisor is not None
        deps = self.deps
        snapshot = AccountSnapshot(
            account_id=account.account_id,
            label=account.label,
            lifecycle=account.lifecycle,
            plan_type=account.plan_type,
            max_in_flight=cap,
            primary=account.primary,
            secondary=account.secondary,
        )
        state = AccountState(snapshot=snapshot, chatgpt_account_id=account.chatgpt_account_id)
        mailbox: Mailbox[Any] = Mailbox(ACCOUNT_MAILBOX_CAPACITY, name=f"account:{account.label}")
        # One upstream connection per lease: the in-flight cap, not the pool, is the limit.
        upstream = UpstreamPool(
            deps.upstream_base_url,
            max_connections=max(cap, UPSTREAM_MIN_CONNECTIONS),
            max_idle=UPSTREAM_MAX_IDLE,
        )
        actor = AccountActor(
            state,
            mailbox,
            upstream,
            publish=lambda s: None,
            load_credentials=deps.load_credentials,
            refresh_credentials=deps.refresh_credentials,
            persist_quota=deps.persist_quota,
        )
        handle = AccountHandle(state, mailbox, upstream, actor)
        self.accounts[account.account_id] = handle
        try:
            await self._supervisor.start_child(
                account.account_id,
                partial(self._guard_account, handle),
                budget=deps.restart_budget(),
            )
        except Exception as exc:
            log.error("account %s could not start: %s", account.label, type(exc).__name__)
            handle.state.snapshot = replace(handle.state.snapshot, alive=False)

    async def _guard_account(
        self, handle: AccountHandle, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Supervise one account's actor. When it crashes past its restart budget, the
        account alone leaves routing for a cool-off, then gets a fresh budget: one broken
        account never takes the PoolSupervisor (and every other account) down with it."""
        name = handle.snapshot.account_id
        status: trio.TaskStatus[None] = task_status
        while True:
            try:
                await supervise(
                    name,
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
                handle.state.snapshot = replace(handle.state.snapshot, alive=False)
                status = trio.TASK_STATUS_IGNORED
                await trio.sleep(ESCALATION_COOLOFF_S)

    async def _stop_account(self, account_id: str) -> None:
        assert self._supervisor is not None
        handle = self.accounts.pop(account_id)
        for cmap in self.continuity.values():
            cmap.forget_account(account_id)
        if account_id in self._supervisor.children:
            await self._supervisor.stop_child(account_id)
        with trio.move_on_after(2, shield=True):
            await handle.upstream.aclose()
