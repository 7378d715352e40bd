"""AccountActor: one per upstream account; owns its leases, quota evidence, circuits and
upstream websockets, and its token (kept fresh by `AccountTokens`).

Handling a message is synchronous (decide, then let tasks in the actor's nursery do I/O):
nothing interleaves inside a decision. The decrypted access token lives only in the actor
and in the leases it hands out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from pooler.actors import messages as m
from pooler.actors.account_state import (
    AccountState,
    Credentials,
    FetchUsage,
    LoadCredentials,
    PersistQuota,
    RefreshCredentials,
    RefreshResult,
    RefreshUnavailable,
    UsageResult,
    circuit_settings,
    credentials_from_token,
)
from pooler.actors.account_tokens import REFRESH_RETRY_FIRST_S, AccountTokens
from pooler.actors.runtime import Actor, Mailbox
from pooler.instance_settings import InstanceSettings
from pooler.protocol.ratelimit import HeaderMemo, RateLimitSnapshot
from pooler.routing.circuit import Circuit, CircuitSettings
from pooler.routing.evidence import (
    apply_evidence,
    evidence_changes,
    reports_windows,
    usage_limit_evidence,
)
from pooler.routing.lifecycle import Event, IllegalTransition, Lifecycle, follow, transition
from pooler.routing.snapshot import AccountSnapshot, updated
from pooler.upstream.http1 import UpstreamPool
from pooler.upstream.websocket import (
    ACCOUNT_CRASHED,
    UpstreamWebsocket,
    WebsocketEnd,
    hold_upstream_websocket,
)

__all__ = [  # the account's data is re-exported for those who import it from here
    "REFRESH_RETRY_FIRST_S",
    "AccountActor",
    "AccountState",
    "Credentials",
    "FetchUsage",
    "LoadCredentials",
    "PersistQuota",
    "RefreshCredentials",
    "RefreshResult",
    "RefreshUnavailable",
    "UsageResult",
    "credentials_from_token",
]

log = logging.getLogger("pooler.actors.account")

ACTIVE = Lifecycle.ACTIVE

RATE_LIMIT_COOLDOWN_S = 5.0


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
        self._persist_quota = persist_quota
        self._fetch_usage = fetch_usage
        self._settings = settings
        self._clock = clock  # wall time (epoch seconds), injectable for tests
        self.tokens = AccountTokens(
            state, mailbox, load_credentials, refresh_credentials, self._login_refused, clock
        )
        self._polling = False
        self._nursery: trio.Nursery | None = None
        self._websockets: set[UpstreamWebsocket] = set()  # open upstream sockets, by holder
        self.quota_headers = HeaderMemo()  # the quota headers of its answers, parsed once
        self.handlers = {
            m.Offer: self._offered,
            m.Confirm: self._confirm_message,
            m.Release: lambda msg: self._release(msg.lease_id, msg.outcome),
            m.OpenWebsocket: self._open_websocket,
            m.TurnRefused: self._turn_refused,
            m.RefreshNow: self.tokens.refresh_now,
            m.RefreshFinished: self.tokens.refresh_finished,
            m.SetLifecycle: self._set_lifecycle,
            m.PollUsage: lambda msg: self._start_usage_poll(),
            m.UsagePolled: self._usage_polled,
            m.QuotaEvidence: lambda msg: self._learn(msg.evidence, msg.observed_at, source=None),
            m.TurnEvidence: lambda msg: self._learn(msg.evidence, msg.observed_at, source="event"),
            m.ReloadCredentials: lambda msg: self.tokens.reload(),
            m.CredentialsLoaded: lambda msg: self.tokens.loaded(msg.access_token),
            # circuit views follow the new limits
            m.ApplySettings: lambda msg: self._publish(self.state.snapshot),
            m.InjectCrash: self._inject_crash,
            m.SetModels: self._set_models,
        }
        # Confirmed (or released) at once by the sender while this actor is idle
        # (`Mailbox.handle_now`): the lease's path to the requester without a turn of the
        # loop, and no queued release to make the next offer wait for this actor's turn.
        self.inline = frozenset({m.Offer, m.Confirm, m.Release})

    @property
    def account_id(self) -> str:
        return self.state.snapshot.account_id

    async def setup(self) -> None:
        await self.tokens.load()
        self._polling = False
        self._set(in_flight=len(self.state.leases), alive=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.setup()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.tokens.start(nursery)
                task_status.started()
                await self.serve()
        finally:
            self._nursery = None
            self.tokens.stop()

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

    def _login_refused(self) -> None:
        self._set(lifecycle=transition(self.state.snapshot.lifecycle, Event.LOGIN_REFUSED))

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
        creds = self.tokens.credentials
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
        evidence = self.quota_headers.parse(outcome.headers, now) if outcome.headers else None
        # One copy of the snapshot for the evidence and the outcome, not one each.
        changes: dict[str, Any] = {"in_flight": len(self.state.leases)}
        if evidence is not None:
            changes.update(evidence_changes(self.state.snapshot, evidence, now))
            if self._persist_quota is not None:
                self._persist_quota(self.state.snapshot.account_id, evidence, now, "headers")
            # A 429 for one model's own limit (`x-codex-active-limit` names an extra
            # family the headers report): that family blocks the model, not the account.
            active = (evidence.active_limit or "").lower().replace("-", "_")
            scoped_limit = active in evidence.extra
        if (
            outcome.kind == m.USAGE_LIMIT
            and outcome.resets_at is not None
            and not scoped_limit
            and not reports_windows(evidence)
            and not reports_windows(outcome.rate_limits)
            and self._persist_quota is not None
        ):
            # Only the answer's body says the account is out (no quota headers): this node
            # blocks it (`blocked_until`, below); stored as a full window, so the other
            # nodes keep off it too (DESIGN §11) rather than each meeting a 429 of its own.
            out = usage_limit_evidence(self.state.snapshot, outcome.resets_at)
            self._persist_quota(self.state.snapshot.account_id, out, now, "error")
        settings = self._settings()
        kind = outcome.kind
        if kind == m.USAGE_LIMIT and not scoped_limit:
            changes["blocked_until"] = outcome.resets_at or now + 300.0
        elif kind == m.RATE_LIMITED:
            changes["cooling_until"] = now + (outcome.retry_after or RATE_LIMIT_COOLDOWN_S)
        elif kind == m.OK:
            changes["blocked_until"] = changes["demoted_until"] = None
        if kind in m.DEMOTING_KINDS and settings.demotion_seconds > 0:
            changes["demoted_until"] = now + settings.demotion_seconds
        snap = updated(self.state.snapshot, changes)
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

    def _start_usage_poll(self) -> None:
        creds = self.tokens.credentials
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
            self.tokens.start_refresh(message.unauthorized_token)

    # --- effects -----------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        self._publish(updated(self.state.snapshot, changes))

    def _publish(self, snapshot: AccountSnapshot) -> None:
        circuits = self.state.circuits
        if circuits or snapshot.circuits:
            settings = self._circuit_settings()
            views = {rc: c.view(settings) for rc, c in circuits.items() if c.state != "closed"}
            if views != snapshot.circuits:
                snapshot = replace(snapshot, circuits=views)
        self.state.snapshot = snapshot
        self._publish_to(snapshot)
