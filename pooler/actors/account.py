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
from pooler.actors.runtime import Actor, Mailbox, ReplyTo
from pooler.instance_settings import InstanceSettings
from pooler.protocol.jwt import jwt_expiry
from pooler.protocol.ratelimit import RateLimitSnapshot, parse_rate_limit_headers
from pooler.routing.circuit import Circuit, CircuitSettings
from pooler.routing.evidence import apply_evidence
from pooler.routing.lifecycle import Event, IllegalTransition, Lifecycle, follow, transition
from pooler.routing.snapshot import AccountSnapshot
from pooler.upstream.http1 import UpstreamPool
from pooler.upstream.websocket import (
    ACCOUNT_CRASHED,
    UpstreamWebsocket,
    WebsocketEnd,
    hold_upstream_websocket,
)

log = logging.getLogger("pooler.actors.account")

ACTIVE = Lifecycle.ACTIVE

REFRESH_AHEAD_FRACTION = 0.8
RATE_LIMIT_COOLDOWN_S = 5.0
REFRESH_RETRY_FIRST_S = 15.0
REFRESH_RETRY_MAX_S = 300.0
REFRESH_RETRY_MIN_S = 0.1  # the shortest pause, when the token in use is about to expire


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


@dataclass(frozen=True, slots=True)
class UsageResult:
    evidence: RateLimitSnapshot | None
    unauthorized: bool = False


# The I/O an account needs, provided by the gateway (database and OAuth behind them).
LoadCredentials = Callable[[str], Awaitable[Credentials]]
RefreshCredentials = Callable[[str, str], Awaitable[RefreshResult]]
# (account id, evidence, observed at, source: headers|event|usage_api)
PersistQuota = Callable[[str, RateLimitSnapshot, float, str], None]
# (access token, chatgpt account id) -> what the upstream usage endpoint says.
FetchUsage = Callable[[str, str], Awaitable[UsageResult]]


class RefreshUnavailable(Exception):
    """No usable token: the refresh failed or the account needs a new login."""


@dataclass(slots=True)
class AccountState:
    """What survives an actor restart: identity, lifecycle and quota evidence."""

    snapshot: AccountSnapshot
    chatgpt_account_id: str
    refresh_generation: int = 0
    refresh_failures: int = 0
    # Leases outlive a crash of the actor (their requests keep running), so they live here:
    # lease id -> (route class, admitted as a circuit probe).
    leases: dict[int, tuple[str, bool]] = field(default_factory=dict)
    next_lease: int = 0
    circuits: dict[str, Circuit] = field(default_factory=dict)  # route class -> circuit
    circuit_transitions: int = 0


def circuit_settings(settings: InstanceSettings) -> CircuitSettings:
    return CircuitSettings(
        settings.circuit_failure_threshold,
        settings.circuit_open_seconds,
        settings.circuit_half_open_probes,
    )


class AccountActor(Actor[Any]):
    """One upstream account: hands out leases, learns from outcomes, keeps its token fresh.

    Its lifecycle moves only through `pooler.routing.lifecycle` (the database's word via
    `SetLifecycle`, a refused login here); an illegal move is logged and refused.
    """

    def __init__(
        self,
        state: AccountState,
        mailbox: Mailbox[Any],
        upstream: UpstreamPool,
        publish: Callable[[AccountSnapshot], None],
        load_credentials: LoadCredentials,
        refresh_credentials: RefreshCredentials,
        persist_quota: PersistQuota | None = None,
        fetch_usage: FetchUsage | None = None,
        settings: Callable[[], InstanceSettings] = InstanceSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(mailbox.name, mailbox=mailbox)
        self.state = state
        self.upstream = upstream
        self._publish_to = publish
        self._load_credentials = load_credentials
        self._refresh_credentials = refresh_credentials
        self._persist_quota = persist_quota
        self._fetch_usage = fetch_usage
        self._settings = settings
        self._clock = clock  # wall time (epoch seconds), injectable for tests
        self._credentials: Credentials | None = None
        self._refreshing = False
        self._polling = False
        self._loading = False
        self._waiters: list[ReplyTo[str]] = []
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._websockets: set[UpstreamWebsocket] = set()  # open upstream sockets, by holder
        self.handlers = {
            m.Offer: self._offered,
            m.Confirm: self._confirm_message,
            m.Release: lambda msg: self._release(msg.lease_id, msg.outcome),
            m.OpenWebsocket: self._open_websocket,
            m.TurnRefused: self._turn_refused,
            m.RefreshNow: self._refresh_now,
            m.RefreshFinished: self._refresh_finished,
            m.SetLifecycle: self._set_lifecycle,
            m.PollUsage: lambda msg: self._start_usage_poll(),
            m.UsagePolled: self._usage_polled,
            m.QuotaEvidence: lambda msg: self._learn(msg.evidence, msg.observed_at, source=None),
            m.TurnEvidence: lambda msg: self._learn(msg.evidence, msg.observed_at, source="event"),
            m.ReloadCredentials: lambda msg: self._start_reload(),
            m.CredentialsLoaded: lambda msg: self._credentials_loaded(msg.access_token),
            # circuit views follow the new limits
            m.ApplySettings: lambda msg: self._publish(self.state.snapshot),
            m.InjectCrash: self._inject_crash,
            m.SetModels: self._set_models,
        }

    @property
    def account_id(self) -> str:
        return self.state.snapshot.account_id

    async def setup(self) -> None:
        self._credentials = await self._load_credentials(self.account_id)
        self._refreshing = self._polling = self._loading = False
        self._waiters = []
        self._set(in_flight=len(self.state.leases), alive=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.setup()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._schedule_refresh_ahead()
                task_status.started()
                await self.serve()
        finally:
            self._nursery = None
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:  # nobody is left to finish their refresh
                waiter.fail(RefreshUnavailable("the account actor stopped"))

    async def handle(self, message: Any) -> None:
        try:
            self.dispatch(message)  # every handler here decides without awaiting
        except BaseException:
            self._websockets_ended(ACCOUNT_CRASHED)  # before the nursery closes them
            raise

    # --- decisions ---------------------------------------------------------------------

    def _confirm_message(self, message: m.Confirm) -> None:
        lease = self._confirm(message.route_class)
        if not message.reply_to.send(lease) and lease is not None:
            self._release(lease.lease_id, m.Outcome(m.CANCELLED))

    def _set_lifecycle(self, message: m.SetLifecycle) -> None:
        snap = self.state.snapshot
        try:
            lifecycle = follow(snap.lifecycle, message.lifecycle)
        except IllegalTransition as exc:  # a stale word from the database: keep ours
            log.warning("account %s: %s", snap.label, exc)
            lifecycle = Lifecycle(snap.lifecycle)
        self._set(lifecycle=lifecycle, max_in_flight=message.max_in_flight or snap.max_in_flight)

    def _set_models(self, message: m.SetModels) -> None:
        if message.models != self.state.snapshot.models:
            self._set(models=message.models)

    def _inject_crash(self, message: m.InjectCrash) -> None:
        raise RuntimeError("injected crash")

    def _offered(self, offer: m.Offer) -> None:
        lease = self._confirm(offer.request.route_class)
        if lease is None:
            if not offer.supervisor.try_send(m.Refused(offer)):
                offer.request.reply_to.send(m.LeaseGranted(offer.choice, None, offer.refused))
            return
        granted = m.LeaseGranted(offer.choice, lease, offer.refused)
        if not offer.request.reply_to.send(granted):  # the requester gave up meanwhile
            self._release(lease.lease_id, m.Outcome(m.CANCELLED))

    def _confirm(self, route_class: str) -> m.Lease | None:
        snap = self.state.snapshot
        creds = self._credentials
        if snap.lifecycle != ACTIVE or creds is None or snap.in_flight >= snap.max_in_flight:
            return None
        circuit = self.state.circuits.get(route_class)
        probe = False
        if circuit is not None:
            admitted = circuit.admit(self._clock(), self._circuit_settings())
            if admitted is None:
                self._publish(snap)  # the supervisor's view may lag: refresh it
                return None
            probe = admitted
        self.state.next_lease += 1
        self.state.leases[self.state.next_lease] = (route_class, probe)
        self._set(in_flight=len(self.state.leases))
        return m.Lease(
            lease_id=self.state.next_lease,
            account_id=snap.account_id,
            label=snap.label,
            chatgpt_account_id=self.state.chatgpt_account_id,
            access_token=creds.access_token,
            upstream=self.upstream,
            mailbox=self.mailbox,
            route_class=route_class,
            probe=probe,
        )

    def _circuit_settings(self) -> CircuitSettings:
        return circuit_settings(self._settings())

    def _release(self, lease_id: int, outcome: m.Outcome) -> None:
        route_class, probe = self.state.leases.pop(lease_id, ("responses", False))
        self._apply_outcome(route_class, probe, outcome)

    def _turn_refused(self, message: m.TurnRefused) -> None:
        """A refusal inside a lease that stays held (a websocket turn): its limits now;
        the circuit and the lease count wait for the release."""
        route_class, _ = self.state.leases.get(message.lease_id, ("responses", False))
        if message.outcome.kind in (m.USAGE_LIMIT, m.RATE_LIMITED):
            self._apply_outcome(route_class, None, message.outcome)

    def _open_websocket(self, message: m.OpenWebsocket) -> None:
        if self._nursery is None:
            message.reply_to.close()
            return
        self._nursery.start_soon(
            hold_upstream_websocket,
            message.target,
            message.reply_to.send,
            message.reply_to.fail,
            self._websockets,
        )

    def _websockets_ended(self, reason: WebsocketEnd) -> None:
        """Say why this incarnation's sockets are about to close, for their handlers."""
        for socket in self._websockets:
            socket.ended_by = socket.ended_by or reason

    def _apply_outcome(self, route_class: str, probe: bool | None, outcome: m.Outcome) -> None:
        """Learn from an attempt's outcome: limits, demotion and (unless `probe` is None,
        for an outcome inside a lease still held) the route class's circuit."""
        now = self._clock()
        if outcome.rate_limits is not None:
            self._learn(outcome.rate_limits, now, source="event", publish=False)
        scoped_limit = False
        if outcome.headers:
            evidence = parse_rate_limit_headers(outcome.headers, now)
            if evidence is not None:
                self._learn(evidence, now, source="headers", publish=False)
                # A 429 for one model's own limit (`x-codex-active-limit` names an extra
                # family the headers report): that family blocks the model, not the account.
                active = (evidence.active_limit or "").lower().replace("-", "_")
                scoped_limit = active in evidence.extra
        snap = replace(self.state.snapshot, in_flight=len(self.state.leases))
        settings = self._settings()
        kind = outcome.kind
        if kind == m.USAGE_LIMIT and not scoped_limit:
            snap = replace(snap, blocked_until=outcome.resets_at or now + 300.0)
        elif kind == m.RATE_LIMITED:
            snap = replace(snap, cooling_until=now + (outcome.retry_after or RATE_LIMIT_COOLDOWN_S))
        elif kind == m.OK:
            snap = replace(snap, blocked_until=None, demoted_until=None)
        if kind in m.DEMOTING_KINDS and settings.demotion_seconds > 0:
            snap = replace(snap, demoted_until=now + settings.demotion_seconds)
        if probe is not None:
            self._count(route_class, probe, kind, now, settings)
        # An UNAUTHORIZED release needs nothing here: the handler follows it with RefreshNow
        # naming the token that failed, so a token someone already refreshed is not redone.
        self._publish(snap)

    def _count(
        self,
        route_class: str,
        probe: bool,
        kind: m.OutcomeKind,
        now: float,
        settings: InstanceSettings,
    ) -> None:
        """One finished attempt on the route class's circuit."""
        circuit = self.state.circuits.get(route_class)
        if kind in m.CIRCUIT_FAILURE_KINDS:
            if circuit is None:
                circuit = self.state.circuits[route_class] = Circuit()
            self._transition(route_class, circuit.failed(probe, now, circuit_settings(settings)))
        elif circuit is not None:
            if kind == m.OK:
                self._transition(route_class, circuit.succeeded(probe))
            else:
                circuit.neutral(probe)

    def _transition(self, route_class: str, transition: str | None) -> None:
        if transition is not None:
            self.state.circuit_transitions += 1
            log.info(
                "account %s: %s circuit %s",
                self.state.snapshot.label,
                route_class,
                transition,
            )

    def _learn(
        self,
        evidence: RateLimitSnapshot,
        observed_at: float,
        *,
        source: str | None,
        publish: bool = True,
    ) -> None:
        """Fold evidence in; `source` None: learned from the database, nothing to store."""
        snap = apply_evidence(self.state.snapshot, evidence, observed_at)
        if source is not None and self._persist_quota is not None:
            self._persist_quota(snap.account_id, evidence, observed_at, source)
        if publish:
            self._publish(snap)
        else:
            self.state.snapshot = snap

    def _refresh_now(self, message: m.RefreshNow) -> None:
        creds = self._credentials
        if self.state.snapshot.lifecycle == Lifecycle.REAUTH_REQUIRED:
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
            self.state.refresh_failures = 0
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
            self._set(lifecycle=transition(self.state.snapshot.lifecycle, Event.LOGIN_REFUSED))
        for waiter in waiters:
            waiter.fail(RefreshUnavailable(message.reauth_reason or message.error or "refresh"))
        if message.reauth_reason is None:
            # Transient: the account stays routable on its still-valid token; try again with
            # a growing pause (the OAuth call itself already retried a few times).
            failures = self.state.refresh_failures = self.state.refresh_failures + 1
            pause = min(REFRESH_RETRY_MAX_S, REFRESH_RETRY_FIRST_S * 2 ** (failures - 1))
            creds = self._credentials
            left = creds.expires_at - self._clock() if creds and creds.expires_at else 0.0
            if left > 0:  # retry while the token in use still lives (short-lived tokens)
                pause = min(pause, max(REFRESH_RETRY_MIN_S, left / 2))
            self._schedule_refresh_ahead(retry_in=pause)

    def _start_usage_poll(self) -> None:
        creds = self._credentials
        if (
            self._polling
            or self._fetch_usage is None
            or self._nursery is None
            or creds is None
            or self.state.snapshot.lifecycle != ACTIVE
        ):
            return
        self._polling = True
        self._nursery.start_soon(self._run_usage_poll, creds.access_token)

    async def _run_usage_poll(self, access_token: str) -> None:
        assert self._fetch_usage is not None
        result = UsageResult(None)
        with trio.move_on_after(30):
            try:
                result = await self._fetch_usage(access_token, self.state.chatgpt_account_id)
            except Exception as exc:  # a failed poll must not kill the actor
                log.info("account %s: usage poll failed: %s", self.state.snapshot.label, exc)
        stale = access_token if result.unauthorized else None
        await self.mailbox.send(m.UsagePolled(result.evidence, stale))

    def _usage_polled(self, message: m.UsagePolled) -> None:
        self._polling = False
        if message.evidence is not None:
            self._learn(message.evidence, self._clock(), source="usage_api")
        if message.unauthorized_token is not None:
            self._start_refresh(message.unauthorized_token)

    def _start_reload(self) -> None:
        if self._loading or self._nursery is None:
            return
        self._loading = True
        self._nursery.start_soon(self._run_reload)

    async def _run_reload(self) -> None:
        token: str | None = None
        with trio.move_on_after(30):
            try:
                token = (await self._load_credentials(self.account_id)).access_token
            except Exception as exc:
                log.warning("account %s: reload failed: %s", self.state.snapshot.label, exc)
        await self.mailbox.send(m.CredentialsLoaded(token))

    def _credentials_loaded(self, access_token: str | None) -> None:
        self._loading = False
        creds = self._credentials
        if access_token is None or (creds is not None and creds.access_token == access_token):
            return
        self._credentials = credentials_from_token(access_token)
        self._schedule_refresh_ahead()

    # --- effects -----------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        self._publish(replace(self.state.snapshot, **changes))

    def _publish(self, snapshot: AccountSnapshot) -> None:
        circuits = self.state.circuits
        if circuits or snapshot.circuits:
            settings = self._circuit_settings()
            views = {rc: c.view(settings) for rc, c in circuits.items() if c.state != "closed"}
            if views != snapshot.circuits:
                snapshot = replace(snapshot, circuits=views)
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
            issued = creds.issued_at if creds.issued_at is not None else self._clock()
            due = issued + REFRESH_AHEAD_FRACTION * max(0.0, creds.expires_at - issued)
            delay = max(0.0, due - self._clock())
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
