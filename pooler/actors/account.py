"""AccountActor: one per upstream account; owns its token, quota evidence and leases.

Handling a message is synchronous (decide, then let tasks in the actor's nursery do I/O):
nothing interleaves inside a decision. The decrypted access token lives only here and in
the leases it hands out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from pooler.actors import messages as m
from pooler.actors.runtime import Mailbox, ReplyTo
from pooler.protocol.jwt import jwt_expiry
from pooler.protocol.ratelimit import QuotaWindow, RateLimitSnapshot, parse_rate_limit_headers
from pooler.routing.snapshot import AccountSnapshot, WindowState
from pooler.upstream.http1 import UpstreamPool

log = logging.getLogger("pooler.actors.account")

REFRESH_AHEAD_FRACTION = 0.8
RATE_LIMIT_COOLDOWN_S = 5.0
FAILURE_COOLDOWN_S = 30.0
FAILURES_BEFORE_COOLDOWN = 3


@dataclass(frozen=True, slots=True)
class Credentials:
    access_token: str
    issued_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class RefreshResult:
    access_token: str | None
    reauth_reason: str | None = None
    error: str | None = None


# The I/O an account needs, provided by the gateway (database and OAuth behind them).
LoadCredentials = Callable[[str], Awaitable[Credentials]]
RefreshCredentials = Callable[[str, str], Awaitable[RefreshResult]]
PersistQuota = Callable[[str, RateLimitSnapshot], None]


class RefreshUnavailable(Exception):
    """No usable token: the refresh failed or the account needs a new login."""


@dataclass(slots=True)
class AccountState:
    """What survives an actor restart: identity, lifecycle and quota evidence."""

    snapshot: AccountSnapshot
    chatgpt_account_id: str
    consecutive_failures: int = 0
    refresh_generation: int = 0
    # Leases outlive a crash of the actor (their requests keep running), so they live here.
    leases: set[int] = field(default_factory=set)
    next_lease: int = 0


def _window(window: QuotaWindow | None) -> WindowState | None:
    if window is None:
        return None
    return WindowState(window.used_percent, window.reset_at)


class AccountActor:
    def __init__(
        self,
        state: AccountState,
        mailbox: Mailbox[Any],
        upstream: UpstreamPool,
        publish: Callable[[AccountSnapshot], None],
        load_credentials: LoadCredentials,
        refresh_credentials: RefreshCredentials,
        persist_quota: PersistQuota | None = None,
    ) -> None:
        self.state = state
        self.mailbox = mailbox
        self.upstream = upstream
        self._publish_to = publish
        self._load_credentials = load_credentials
        self._refresh_credentials = refresh_credentials
        self._persist_quota = persist_quota
        self._credentials: Credentials | None = None
        self._refreshing = False
        self._waiters: list[ReplyTo[str]] = []
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def account_id(self) -> str:
        return self.state.snapshot.account_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._credentials = await self._load_credentials(self.account_id)
        self._refreshing = False
        self._waiters = []
        self._set(in_flight=len(self.state.leases), alive=True)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._schedule_refresh_ahead()
                task_status.started()
                async for message in self.mailbox.receive_channel:
                    self.handle(message)
        finally:
            self._nursery = None
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:  # nobody is left to finish their refresh
                waiter.fail(RefreshUnavailable("the account actor stopped"))

    # --- decisions ---------------------------------------------------------------------

    def handle(self, message: object) -> None:
        if isinstance(message, m.Offer):
            self._offered(message)
        elif isinstance(message, m.Confirm):
            lease = self._confirm()
            if not message.reply_to.send(lease) and lease is not None:
                self._release(lease.lease_id, m.Outcome(m.CANCELLED))
        elif isinstance(message, m.Release):
            self._release(message.lease_id, message.outcome)
        elif isinstance(message, m.RefreshNow):
            self._refresh_now(message)
        elif isinstance(message, m.RefreshFinished):
            self._refresh_finished(message)
        elif isinstance(message, m.SetLifecycle):
            self._set(
                lifecycle=message.lifecycle,
                max_in_flight=message.max_in_flight or self.state.snapshot.max_in_flight,
            )
        elif isinstance(message, m.InjectCrash):
            raise RuntimeError("injected crash")
        elif isinstance(message, m.GetSnapshot):
            message.reply_to.send(self.state.snapshot)
        else:
            log.warning("account %s: unknown message %s", self.state.snapshot.label, type(message))

    def _offered(self, offer: m.Offer) -> None:
        lease = self._confirm()
        if lease is None:
            if not offer.supervisor.try_send(m.Refused(offer)):
                offer.request.reply_to.send(m.LeaseGranted(offer.choice, None, offer.refused))
            return
        granted = m.LeaseGranted(offer.choice, lease, offer.refused)
        if not offer.request.reply_to.send(granted):  # the requester gave up meanwhile
            self._release(lease.lease_id, m.Outcome(m.CANCELLED))

    def _confirm(self) -> m.Lease | None:
        snap = self.state.snapshot
        creds = self._credentials
        if snap.lifecycle != "active" or creds is None or snap.in_flight >= snap.max_in_flight:
            return None
        self.state.next_lease += 1
        self.state.leases.add(self.state.next_lease)
        self._set(in_flight=len(self.state.leases))
        return m.Lease(
            lease_id=self.state.next_lease,
            account_id=snap.account_id,
            label=snap.label,
            chatgpt_account_id=self.state.chatgpt_account_id,
            access_token=creds.access_token,
            upstream=self.upstream,
            mailbox=self.mailbox,
        )

    def _release(self, lease_id: int, outcome: m.Outcome) -> None:
        snap = self.state.snapshot
        if lease_id in self.state.leases:
            self.state.leases.discard(lease_id)
            snap = replace(snap, in_flight=len(self.state.leases))
        now = time.time()
        evidence = outcome.rate_limits
        if evidence is None and outcome.headers:
            evidence = parse_rate_limit_headers(outcome.headers, now)
        if evidence is not None:
            snap = replace(
                snap,
                primary=_window(evidence.primary) or snap.primary,
                secondary=_window(evidence.secondary) or snap.secondary,
                plan_type=evidence.plan_type or snap.plan_type,
            )
            if self._persist_quota is not None:
                self._persist_quota(snap.account_id, evidence)
        kind = outcome.kind
        if kind == m.USAGE_LIMIT:
            until = outcome.resets_at or now + 300.0
            snap = replace(snap, blocked_until=until)
        elif kind == m.RATE_LIMITED:
            snap = replace(snap, cooling_until=now + (outcome.retry_after or RATE_LIMIT_COOLDOWN_S))
        elif kind in (m.SERVER_ERROR, m.TRANSPORT_ERROR, m.TIMEOUT):
            self.state.consecutive_failures += 1
            if self.state.consecutive_failures >= FAILURES_BEFORE_COOLDOWN:
                snap = replace(snap, cooling_until=now + FAILURE_COOLDOWN_S)
                self.state.consecutive_failures = 0
        elif kind == m.OK:
            self.state.consecutive_failures = 0
            if snap.blocked_until is not None:
                snap = replace(snap, blocked_until=None)
        # An UNAUTHORIZED release needs nothing here: the handler follows it with RefreshNow
        # naming the token that failed, so a token someone already refreshed is not redone.
        self._publish(snap)

    def _refresh_now(self, message: m.RefreshNow) -> None:
        creds = self._credentials
        if self.state.snapshot.lifecycle == "reauth_required":
            message.reply_to.fail(RefreshUnavailable("account needs a new login"))
            return
        if creds is not None and creds.access_token != message.stale_token:
            message.reply_to.send(creds.access_token)
            return
        self._waiters.append(message.reply_to)
        self._start_refresh(message.stale_token)

    def _refresh_finished(self, message: m.RefreshFinished) -> None:
        self._refreshing = False
        waiters, self._waiters = self._waiters, []
        if message.access_token is not None:
            self._credentials = credentials_from_token(message.access_token)
            for waiter in waiters:
                waiter.send(message.access_token)
            self._schedule_refresh_ahead()
            return
        if message.reauth_reason is not None:
            log.warning(
                "account %s needs a new login (%s)",
                self.state.snapshot.label,
                message.reauth_reason,
            )
            self._set(lifecycle="reauth_required")
        for waiter in waiters:
            waiter.fail(RefreshUnavailable(message.reauth_reason or message.error or "refresh"))
        if message.reauth_reason is None:
            self._schedule_refresh_ahead(retry_in=30.0)

    # --- effects -----------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        self._publish(replace(self.state.snapshot, **changes))

    def _publish(self, snapshot: AccountSnapshot) -> None:
        self.state.snapshot = snapshot
        self._publish_to(snapshot)

    def _start_refresh(self, stale_token: str) -> None:
        if self._refreshing or self._nursery is None:
            return
        self._refreshing = True
        self.state.refresh_generation += 1
        self._nursery.start_soon(self._run_refresh, stale_token, self.state.refresh_generation)

    async def _run_refresh(self, stale_token: str, generation: int) -> None:
        result = RefreshResult(None, error="refresh_timeout")
        with trio.move_on_after(30):
            try:
                result = await self._refresh_credentials(self.account_id, stale_token)
            except Exception as exc:  # a refresh failure must not kill the actor
                log.warning(
                    "account %s: refresh failed: %s", self.state.snapshot.label, type(exc).__name__
                )
                result = RefreshResult(None, error=type(exc).__name__)
        await self.mailbox.send(
            m.RefreshFinished(result.access_token, generation, result.reauth_reason, result.error)
        )

    def _schedule_refresh_ahead(self, retry_in: float | None = None) -> None:
        if self._nursery is None:
            return
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        creds = self._credentials
        if retry_in is not None:
            delay = retry_in
        elif creds is None or creds.expires_at is None:
            return
        else:
            issued = creds.issued_at if creds.issued_at is not None else time.time()
            due = issued + REFRESH_AHEAD_FRACTION * max(0.0, creds.expires_at - issued)
            delay = max(0.0, due - time.time())
        scope = trio.CancelScope()
        self._timer_scope = scope
        self._nursery.start_soon(self._refresh_timer, scope, delay)

    async def _refresh_timer(self, scope: trio.CancelScope, delay: float) -> None:
        with scope:
            await trio.sleep(delay)
            if self._credentials is not None:
                self._start_refresh(self._credentials.access_token)


def credentials_from_token(access_token: str) -> Credentials:
    from pooler.protocol.jwt import decode_jwt_claims

    issued: float | None = None
    try:
        iat = decode_jwt_claims(access_token).get("iat")
        if isinstance(iat, int | float):
            issued = float(iat)
    except ValueError:
        pass
    return Credentials(access_token, issued, jwt_expiry(access_token))
