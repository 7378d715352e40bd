"""PoolSupervisor: the lease authority. Supervises every AccountActor and answers leases.

Each AccountActor publishes its eligibility snapshot into its `AccountHandle` (a single-
writer cell), so choosing never needs a round trip to every actor; the chosen actor stays
the authority and may refuse a `Confirm`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio

from pooler.actors import messages as m
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
from pooler.routing.choose import (
    PIN_DISABLED,
    PIN_NEW,
    PIN_NONE,
    Choice,
    Pin,
    PoolPolicy,
    PoolRouter,
)
from pooler.routing.continuity import ContinuityMap
from pooler.routing.snapshot import AccountSnapshot, ScopedLimit, WindowState
from pooler.routing.strategies import ChoiceHistory
from pooler.upstream.http1 import UpstreamPool

log = logging.getLogger("pooler.actors.pool")

ACCOUNT_MAILBOX_CAPACITY = 1024
SUPERVISOR_MAILBOX_CAPACITY = 4096
UPSTREAM_MIN_CONNECTIONS = 1024
UPSTREAM_MAX_IDLE = 128
MAX_DIRTY_PINS = 100_000
ESCALATION_COOLOFF_S = 60.0
CANDIDATES_PER_OFFER = 3  # the chosen account and its fallbacks should it refuse
POLL_JITTER = 0.1  # usage polls spread by ±10 % so accounts do not poll in lockstep


@dataclass(frozen=True, slots=True)
class AccountConfig:
    account_id: str
    label: str
    chatgpt_account_id: str
    lifecycle: str
    plan_type: str | None
    primary: WindowState | None = None
    secondary: WindowState | None = None
    scoped: tuple[ScopedLimit, ...] = ()
    has_credits: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The part of the database the supervisor runs from (built by the SettingsCache)."""

    pools: dict[str, PoolPolicy]
    accounts: dict[str, AccountConfig]
    assignments: dict[str, tuple[str, ...]]  # pool id -> account ids
    max_in_flight: dict[str, int] = field(default_factory=dict)  # pool id -> per-account cap
    settings: InstanceSettings = field(default_factory=InstanceSettings)


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


class PoolSupervisor:
    def __init__(self, deps: AccountDeps, *, continuity_ttl: float = 6 * 3600.0) -> None:
        self.deps = deps
        self.mailbox: Mailbox[Any] = Mailbox(SUPERVISOR_MAILBOX_CAPACITY, name="pool-supervisor")
        self.accounts: dict[str, AccountHandle] = {}
        self.pools: dict[str, PoolPolicy] = {}
        self.assignments: dict[str, tuple[str, ...]] = {}
        self.continuity: dict[str, ContinuityMap] = {}
        self.routers: dict[str, PoolRouter] = {}
        self.settings = InstanceSettings()
        self._continuity_ttl = continuity_ttl
        self._histories: dict[str, ChoiceHistory] = {}
        self._memberships: dict[str, tuple[str, ...]] = {}  # account id -> pool ids
        self._dirty: set[str] = set()
        self._next_poll: dict[str, float] = {}
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
        elif isinstance(message, m.UsageTick):
            self._poll_due(time.time())
        elif isinstance(message, m.ForwardToAccount):
            handle = self.accounts.get(message.account_id)
            if handle is not None:
                handle.mailbox.try_send(message.message)
        elif isinstance(message, m.Refused):
            offer = message.offer
            refused = (*offer.refused, offer.candidates[0].snapshot.label)
            self._offer(offer.request, offer.choice, offer.candidates[1:], refused)
        elif isinstance(message, m.PinConversation):
            cmap = self.continuity.get(message.pool_id)
            policy = self.pools.get(message.pool_id)
            if cmap is not None and (message.hard or policy is None or policy.continuity):
                now = time.time()
                ttl = self._continuity_ttl if message.ttl is None else message.ttl
                for key in message.continuity_keys:
                    cmap.pin(key, message.account_id, now, ttl)
                    self._note_dirty_pin(message.pool_id, key, message.account_id, now + ttl)
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
        elif isinstance(message, m.ApplySettings):
            self._apply_settings(message.settings)
        elif isinstance(message, m.PoolSnapshots):
            members = self.assignments.get(message.pool_id, ())
            accounts = self.accounts
            message.reply_to.send([accounts[a].snapshot for a in members if a in accounts])
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

    def _note_dirty_pin(self, pool_id: str, key: bytes, account_id: str, expires_at: float) -> None:
        """Remember a pin for the write-behind; bounded, what overflows waits for next time."""
        if len(self._dirty_pins) < MAX_DIRTY_PINS or (pool_id, key) in self._dirty_pins:
            self._dirty_pins[(pool_id, key)] = (account_id, expires_at)
        else:
            self.dirty_pin_overflows += 1

    def _choose(self, request: m.LeaseRequest) -> tuple[Choice, list[m.LeaseCandidate]]:
        now = time.time()
        self._sync(now)
        router = self.routers.get(request.pool_id)
        if router is None:
            return Choice([]), []
        pin, outcome = self._resolve_pin(request, now)
        choice = router.choose(
            now,
            route_class=request.route_class,
            model=request.model,
            pin=pin,
            exclude=request.exclude,
            limit=CANDIDATES_PER_OFFER,
        )
        if pin is None:
            choice.pin_outcome = outcome
        if choice.hard_pin_unavailable:
            return choice, []
        accounts = self.accounts
        candidates = [
            m.LeaseCandidate(s, accounts[s.account_id].mailbox)
            for s in choice.candidates
            if s.account_id in accounts
        ]
        return choice, candidates

    def _resolve_pin(self, request: m.LeaseRequest, now: float) -> tuple[Pin | None, str]:
        policy = self.pools.get(request.pool_id)
        keys = request.continuity_keys
        cmap = self.continuity.get(request.pool_id)
        # A hard pin holds even with continuity off: the upstream itself needs that account.
        if request.hard_key is not None and cmap is not None:
            account_id = cmap.get(request.hard_key, now)
            if account_id is not None:
                return Pin(account_id, hard=True), PIN_NEW
        if policy is not None and not policy.continuity:
            return None, PIN_DISABLED
        if not keys and request.hard_key is None:
            return None, PIN_NONE
        if cmap is None:
            return None, PIN_NEW
        for key in keys:
            account_id = cmap.get(key, now)
            if account_id is not None:
                return Pin(account_id), PIN_NEW
        return None, PIN_NEW

    def _changed(self, account_id: str, snapshot: AccountSnapshot | None = None) -> None:
        """An account's snapshot changed (its actor published, or it crashed)."""
        self._dirty.add(account_id)

    def _sync(self, now: float) -> None:
        """Bring the routers up to date with the accounts that changed since last time."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        routers = self.routers
        for account_id in dirty:
            for pool_id in self._memberships.get(account_id, ()):
                router = routers.get(pool_id)
                if router is not None:
                    router.touch(account_id, now)

    def _lookup(self, account_id: str) -> AccountSnapshot | None:
        handle = self.accounts.get(account_id)
        return handle.state.snapshot if handle is not None else None

    def _poll_due(self, now: float) -> None:
        """Ask each account whose usage poll is due to poll (the actor skips if paused)."""
        interval = self.settings.usage_poll_interval_seconds
        for account_id, handle in self.accounts.items():
            due = self._next_poll.get(account_id)
            if due is None:  # first sight: spread the first polls over one interval
                self._next_poll[account_id] = now + random.uniform(0, interval)
                continue
            if due > now:
                continue
            jitter = random.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
            self._next_poll[account_id] = now + interval * jitter
            if handle.snapshot.lifecycle == "active":
                handle.mailbox.try_send(m.PollUsage())

    def _apply_settings(self, settings: InstanceSettings) -> None:
        changed = settings != self.settings
        new_interval = settings.usage_poll_interval_seconds
        interval_changed = new_interval != self.settings.usage_poll_interval_seconds
        self.settings = settings
        if not changed:
            return
        if interval_changed:  # polls scheduled on the old interval are spread over the new
            now = time.time()
            for account_id in self._next_poll:
                self._next_poll[account_id] = now + random.uniform(0, new_interval)
        for router in self.routers.values():
            router.freshness = settings.quota_freshness_seconds
        for handle in self.accounts.values():
            handle.mailbox.try_send(m.ApplySettings(settings))
        self._rebuild_routers()

    def _on_crash(self, name: str, exc: BaseException, restarts: int) -> None:
        self.crashes += 1
        handle = self.accounts.get(name)
        if handle is not None:
            handle.state.snapshot = replace(handle.state.snapshot, alive=False)
            self._changed(name)

    # --- configuration -------------------------------------------------------------------

    async def _apply(self, config: RuntimeConfig) -> None:
        assert self._supervisor is not None
        self.pools = dict(config.pools)
        self.assignments = dict(config.assignments)
        self._apply_settings(config.settings)
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
        for pool_id in self.pools:
            self.continuity.setdefault(pool_id, ContinuityMap(self._continuity_ttl))
        self._rebuild_routers()

    def _rebuild_routers(self) -> None:
        now = time.time()
        memberships: dict[str, list[str]] = {}
        routers: dict[str, PoolRouter] = {}
        for pool_id, policy in self.pools.items():
            members = [a for a in self.assignments.get(pool_id, ()) if a in self.accounts]
            for account_id in members:
                memberships.setdefault(account_id, []).append(pool_id)
            routers[pool_id] = PoolRouter(
                policy,
                members,
                self._lookup,
                now,
                freshness=self.settings.quota_freshness_seconds,
                history=self._histories.setdefault(pool_id, ChoiceHistory()),
            )
        self.routers = routers
        self._memberships = {a: tuple(p) for a, p in memberships.items()}
        self._dirty.clear()

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
            scoped=account.scoped,
            has_credits=account.has_credits,
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
            publish=partial(self._changed, account.account_id),
            load_credentials=deps.load_credentials,
            refresh_credentials=deps.refresh_credentials,
            persist_quota=deps.persist_quota,
            fetch_usage=deps.fetch_usage,
            settings=lambda: self.settings,
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
                self._changed(name)
                status = trio.TASK_STATUS_IGNORED
                await trio.sleep(ESCALATION_COOLOFF_S)

    async def _stop_account(self, account_id: str) -> None:
        assert self._supervisor is not None
        handle = self.accounts.pop(account_id)
        self._next_poll.pop(account_id, None)
        for cmap in self.continuity.values():
            cmap.forget_account(account_id)
        if account_id in self._supervisor.children:
            await self._supervisor.stop_child(account_id)
        with trio.move_on_after(2, shield=True):
            await handle.upstream.aclose()
