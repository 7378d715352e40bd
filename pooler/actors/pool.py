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
from dataclasses import dataclass, field
from typing import Any

import trio

from pooler.actors import messages as m
from pooler.actors.account_tree import AccountDeps, AccountHandle, AccountTree
from pooler.actors.runtime import Actor
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

log = logging.getLogger("pooler.actors.pool")

SUPERVISOR_MAILBOX_CAPACITY = 4096
MAX_DIRTY_PINS = 100_000
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


class PoolSupervisor(Actor[Any]):
    """The lease authority: chooses accounts for requests and supervises their actors.

    Its routing state (pins, routers, the account handles) lives on the object, so a
    restart of `run` by the gateway's supervisor keeps it and starts the same accounts
    again. `clock` is wall time (epoch seconds, as quota resets are), injectable for tests.
    """

    def __init__(
        self,
        deps: AccountDeps,
        *,
        continuity_ttl: float = 6 * 3600.0,
        clock: Callable[[], float] = time.time,
        on_pin_news: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_pin_news`: called when a conversation is pinned anew or moved (not when a
        pin is only used again), so its write-behind need not wait for the next tick."""
        super().__init__("pool-supervisor", capacity=SUPERVISOR_MAILBOX_CAPACITY)
        self._clock = clock
        self._on_pin_news = on_pin_news
        self.tree = AccountTree(deps, self._changed, lambda: self.settings, clock)
        self.accounts: dict[str, AccountHandle] = self.tree.accounts
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
        self._dirty_pins: dict[tuple[str, bytes], tuple[str, float]] = {}
        self.dirty_pin_overflows = 0
        self.handlers = {
            m.LeaseRequest: self._lease_requested,
            m.Refused: self._refused,
            m.UsageTick: self._usage_tick,
            m.ForwardToAccount: self._forward,
            m.PinConversation: self._pin,
            m.TakeDirtyPins: self._take_dirty_pins,
            m.RestorePins: self._restore_pins,
            m.ApplySettings: self._settings_message,
            m.PoolSnapshots: self._pool_snapshots,
            m.CrashAccount: self._crash_account,
            m.ApplyConfig: self._apply_config,
        }
        # A lease asked while this actor is idle is chosen in the asker's task (no loop
        # turn before this actor runs, nor one before the asker does again); a pin is
        # taken so too, so that no queued pin makes the next lease wait for this actor.
        self.inline = frozenset({m.LeaseRequest, m.PinConversation})

    @property
    def crashes(self) -> int:
        """Account actor crashes so far."""
        return self.tree.crashes

    @property
    def escalations(self) -> int:
        """Accounts that crashed past their restart budget so far."""
        return self.tree.escalations

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.tree.bind(nursery)
            await self.tree.restart_all()  # none at the first start; after a crash, all
            task_status.started()
            try:
                await self.serve()
            finally:
                nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Close the accounts' upstream pools, once the actor has stopped for good (they
        outlive its restarts: the leases of requests in flight hold them)."""
        await self.tree.aclose_upstreams()

    # --- decisions (no await) ------------------------------------------------------------

    def _lease_requested(self, message: m.LeaseRequest) -> None:
        choice, candidates = self._choose(message)
        self._offer(message, choice, tuple(candidates), ())

    def _refused(self, message: m.Refused) -> None:
        offer = message.offer
        refused = (*offer.refused, offer.candidates[0].snapshot.label)
        self._offer(offer.request, offer.choice, offer.candidates[1:], refused)

    def _usage_tick(self, message: m.UsageTick) -> None:
        self._poll_due(self._clock())

    def _forward(self, message: m.ForwardToAccount) -> None:
        handle = self.accounts.get(message.account_id)
        if handle is not None:
            handle.mailbox.try_send(message.message)

    def _pin(self, message: m.PinConversation) -> None:
        cmap = self.continuity.get(message.pool_id)
        policy = self.pools.get(message.pool_id)
        if cmap is not None and (message.hard or policy is None or policy.continuity):
            now = self._clock()
            ttl = self._continuity_ttl if message.ttl is None else message.ttl
            news = False
            for key in message.continuity_keys:
                news |= cmap.pin(key, message.account_id, now, ttl)
                self._note_dirty_pin(message.pool_id, key, message.account_id, now + ttl)
            if news:  # other nodes must learn a new conversation's account at once
                self._on_pin_news()

    def _take_dirty_pins(self, message: m.TakeDirtyPins) -> None:
        dirty, self._dirty_pins = self._dirty_pins, {}
        message.reply_to.send(
            [(pool, key, account, expiry) for (pool, key), (account, expiry) in dirty.items()]
        )

    def _restore_pins(self, message: m.RestorePins) -> None:
        cmap = self.continuity.setdefault(message.pool_id, ContinuityMap(self._continuity_ttl))
        now = self._clock()
        for key, account_id, expires_at in message.pins:
            cmap.restore(key, account_id, expires_at, now)

    def _settings_message(self, message: m.ApplySettings) -> None:
        self._apply_settings(message.settings)

    def _pool_snapshots(self, message: m.PoolSnapshots) -> None:
        members = self.assignments.get(message.pool_id, ())
        accounts = self.accounts
        message.reply_to.send([accounts[a].snapshot for a in members if a in accounts])

    def _crash_account(self, message: m.CrashAccount) -> None:
        handle = self.accounts.get(message.account_id)
        message.reply_to.send(handle is not None and handle.mailbox.try_send(m.InjectCrash()))

    async def _apply_config(self, message: m.ApplyConfig) -> None:
        """The effect of a new configuration: actors start and stop (awaited in turn)."""
        await self._apply(message.snapshot)
        if message.reply_to is not None:
            message.reply_to.send(None)

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
            mailbox = candidates[0].mailbox
            if mailbox.handle_now(offer) or mailbox.try_send(offer):
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
        now = self._clock()
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
            now = self._clock()
            for account_id in self._next_poll:
                self._next_poll[account_id] = now + random.uniform(0, new_interval)
        for router in self.routers.values():
            router.freshness = settings.quota_freshness_seconds
        for handle in self.accounts.values():
            handle.mailbox.try_send(m.ApplySettings(settings))
        self._rebuild_routers()

    # --- configuration -------------------------------------------------------------------

    async def _apply(self, config: RuntimeConfig) -> None:
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
        now = self._clock()
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
        await self.tree.start(snapshot, account.chatgpt_account_id)

    async def _stop_account(self, account_id: str) -> None:
        self._next_poll.pop(account_id, None)
        for cmap in self.continuity.values():
            cmap.forget_account(account_id)
        await self.tree.stop(account_id)
