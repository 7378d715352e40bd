"""The alert pass, once per cluster on the leader (`pooler.cluster_jobs`), every
`INTERVAL_S`: evaluate every Pool's rules against its state, open and resolve incidents
(with their notifications queued, in one transaction), then deliver what is due.

Deliveries run at once (at most `PARALLEL`), each attempt bounded (`webhook`, `mail`). A
failed attempt is retried by a later pass after an exponential backoff with jitter
(`retry_delay`), up to `alert_incidents.MAX_ATTEMPTS`; the queue is in the database, so a
new leader carries on where the last one stopped.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx
import trio

from pooler.actors.scheduler import Job
from pooler.alerts.mail import SMTP_TIMEOUT_S, SmtpServer, send_email
from pooler.alerts.payload import body_of, email_text, notification, subject_line
from pooler.alerts.rules import evaluate_all
from pooler.alerts.state import pool_states
from pooler.alerts.webhook import ATTEMPT_TIMEOUT_S, post_webhook, webhook_client
from pooler.crypto import CryptoError, Keyring
from pooler.db import Database
from pooler.instance_settings import InstanceSettings
from pooler.store import alert_incidents as incidents
from pooler.store import alerts as alert_store
from pooler.store.common import Conn
from pooler.store.instance_settings import get_instance_settings

log = logging.getLogger("pooler.alerts")

INTERVAL_S: Final = 30.0
TIMEOUT_S: Final = 120.0  # below alert_incidents.CLAIM: a pass never outlives its claims
PARALLEL: Final = 8
BACKOFF_BASE_S: Final = 5.0
BACKOFF_CAP_S: Final = 900.0


def retry_delay(attempts: int, base_s: float = BACKOFF_BASE_S) -> timedelta:
    """After `attempts` failed attempts: base * 2^(attempts-1), capped, times a jitter in
    [0.5, 1) so deliveries that failed together do not retry together."""
    raw = min(BACKOFF_CAP_S, base_s * 2 ** max(0, attempts - 1))
    return timedelta(seconds=raw * (0.5 + random.random() / 2))


@dataclass(frozen=True, slots=True)
class PassResult:
    opened: int
    resolved: int
    sent: int
    failed: int  # attempts that failed in this pass


@dataclass(frozen=True, slots=True)
class _Context:
    settings: InstanceSettings
    smtp_password: str | None


def _evaluate(conn: Conn) -> incidents.Changes:
    rules = [r.rule() for r in alert_store.list_rules(conn)]
    if not rules:
        return incidents.Changes([], [])
    # A disabled Pool has no state: its conditions are moot, so its incidents resolve.
    states = pool_states(conn, frozenset(r.pool_id for r in rules))
    return incidents.sync_incidents(conn, [r.id for r in rules], evaluate_all(rules, states))


class AlertJob:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.backoff_base_s = backoff_base_s
        self.attempt_timeout_s = attempt_timeout_s

    def jobs(self) -> list[Job]:
        return [Job("alerts", INTERVAL_S, self._run, timeout_s=TIMEOUT_S)]

    async def _run(self) -> None:
        await self.run_pass()

    async def run_pass(self) -> PassResult:
        changes = await self.db.run(_evaluate)
        for_incidents = len(changes.opened), len(changes.resolved)
        if changes.opened or changes.resolved:
            log.info("alerts: %d incident(s) opened, %d resolved", *for_incidents)
        due = await self.db.run(incidents.claim_due)
        if not due:
            return PassResult(*for_incidents, 0, 0)
        context = await self.db.run(self._context)
        outcomes: list[str | None] = []
        limiter = trio.CapacityLimiter(PARALLEL)
        async with webhook_client(self.attempt_timeout_s) as client, trio.open_nursery() as nursery:
            for delivery in due:
                nursery.start_soon(self._deliver, client, limiter, context, delivery, outcomes)
        failed = sum(1 for o in outcomes if o is not None)
        return PassResult(*for_incidents, len(outcomes) - failed, failed)

    def _context(self, conn: Conn) -> _Context:
        settings = get_instance_settings(conn)[1]
        try:
            password = alert_store.smtp_password(conn, self.keyring)
        except CryptoError:
            password = None  # the key that sealed it is gone: the server will refuse login
        return _Context(settings, password)

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        limiter: trio.CapacityLimiter,
        context: _Context,
        due: incidents.Due,
        outcomes: list[str | None],
    ) -> None:
        async with limiter:
            try:
                error = await self._attempt(client, context, due)
            except Exception:  # one delivery's failure never stops the others
                log.exception("alert delivery %s failed unexpectedly", due.id)
                error = "internal"
        delay = (
            timedelta(0) if error is None else retry_delay(due.attempts + 1, self.backoff_base_s)
        )
        status = await self.db.run(
            lambda conn: incidents.record_attempt(conn, due.id, error, delay)
        )
        outcomes.append(error)
        if error is not None:
            log.warning(
                "alert delivery %s to channel %s failed (%s), attempt %d: %s",
                due.id,
                due.channel_id,
                error,
                due.attempts + 1,
                status,
            )

    async def _attempt(
        self, client: httpx.AsyncClient, context: _Context, due: incidents.Due
    ) -> str | None:
        payload = notification(
            due.event, due.incident, context.settings.alerts.console_url, datetime.now(UTC)
        )
        if due.channel_kind == "webhook":
            try:
                secret = await self.db.run(
                    lambda conn: alert_store.webhook_secret(conn, self.keyring, due.channel_id)
                )
            except CryptoError:
                return "secret_unreadable"
            return await post_webhook(
                client,
                due.url or "",
                secret,
                body_of(payload),
                delivery_id=str(due.id),
                event=payload["event"],
                timeout_s=self.attempt_timeout_s,
            )
        smtp = context.settings.smtp
        if not smtp.host or not smtp.from_address:
            return "smtp_not_configured"
        server = SmtpServer(
            smtp.host,
            smtp.port,
            smtp.from_address,
            smtp.username,
            context.smtp_password,
            smtp.starttls,
        )
        return await send_email(
            server,
            due.email_to or "",
            subject_line(due.event, due.incident),
            email_text(payload),
            timeout_s=min(SMTP_TIMEOUT_S, self.attempt_timeout_s),
        )
