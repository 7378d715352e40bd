"""Alert incidents and their deliveries (`pooler.alerts`).

An incident is open while its rule's condition holds for its subject; the partial unique
index `alert_incidents_open_once` makes opening it idempotent, so two leaders that overlap
for a moment open it once. Opening and resolving each queue one delivery per channel of the
Pool, in the same transaction. A pass claims the due deliveries by moving their due time
ahead (`CLAIM`), so a leader that dies mid-send leaves them to a later pass, and records each
attempt's result: sent, or its error class and the next due time; after `MAX_ATTEMPTS` the
delivery is `failed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from psycopg.types.json import Jsonb

from pooler.alerts.rules import Finding
from pooler.store.common import Conn
from pooler.store.text import storable, storable_json

MAX_ATTEMPTS: Final = 8
CLAIM: Final = timedelta(minutes=3)  # longer than one attempt can take
DUE_BATCH: Final = 50


@dataclass(frozen=True, slots=True)
class Incident:
    id: UUID
    rule_id: UUID
    pool_id: UUID
    pool_name: str
    kind: str
    subject: str
    summary: str
    details: dict[str, Any]
    opened_at: datetime
    resolved_at: datetime | None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class Changes:
    opened: list[UUID]
    resolved: list[UUID]


def sync_incidents(conn: Conn, rule_ids: Sequence[UUID], findings: Sequence[Finding]) -> Changes:
    """Open an incident for each finding without one; resolve the open incidents of
    `rule_ids` (the rules evaluated) that no finding holds up. Each change queues its
    notifications."""
    holding = {(f.rule_id, f.subject) for f in findings}
    resolved: list[UUID] = []
    for incident_id, rule_id, subject in conn.execute(
        "SELECT id, rule_id, subject FROM alert_incidents"
        " WHERE resolved_at IS NULL AND rule_id = ANY(%s)",
        (list(rule_ids),),
    ).fetchall():
        if (rule_id, subject) in holding:
            continue
        done = conn.execute(
            "UPDATE alert_incidents SET resolved_at = now() WHERE id = %s"
            " AND resolved_at IS NULL RETURNING pool_id",
            (incident_id,),
        ).fetchone()
        if done is not None:
            _queue(conn, incident_id, done[0], "resolved")
            resolved.append(incident_id)
    opened: list[UUID] = []
    for f in findings:
        row = conn.execute(
            "INSERT INTO alert_incidents (rule_id, pool_id, kind, subject, summary, details)"
            " SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM alert_rules WHERE id = %s)"
            " ON CONFLICT (rule_id, subject) WHERE resolved_at IS NULL DO NOTHING RETURNING id",
            (
                f.rule_id,
                f.pool_id,
                f.kind,
                storable(f.subject, 100),
                storable(f.summary, 500),
                Jsonb(storable_json(f.details)),
                f.rule_id,
            ),
        ).fetchone()
        if row is not None:
            _queue(conn, row[0], f.pool_id, "opened")
            opened.append(row[0])
    return Changes(opened, resolved)


def _queue(conn: Conn, incident_id: UUID, pool_id: UUID, event: str) -> None:
    conn.execute(
        "INSERT INTO alert_deliveries (incident_id, channel_id, event)"
        " SELECT %s, id, %s FROM alert_channels WHERE pool_id = %s"
        " ON CONFLICT ON CONSTRAINT alert_deliveries_once DO NOTHING",
        (incident_id, event, pool_id),
    )


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery taken by this pass: what to send and where."""

    id: UUID
    event: str
    attempts: int  # before this one
    incident: Incident
    channel_id: UUID
    channel_kind: str
    channel_name: str
    url: str | None
    email_to: str | None


_INCIDENT_COLUMNS: Final = (
    "i.id, i.rule_id, i.pool_id, p.name, i.kind, i.subject, i.summary, i.details,"
    " i.opened_at, i.resolved_at"
)


def claim_due(conn: Conn, limit: int = DUE_BATCH) -> list[Due]:
    """Take the pending deliveries that are due (another pass skips them until `CLAIM`
    has passed)."""
    taken = conn.execute(
        "UPDATE alert_deliveries SET next_attempt_at = now() + %s WHERE id IN ("
        " SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
        (CLAIM, limit),
    ).fetchall()
    if not taken:
        return []
    rows = conn.execute(
        f"SELECT d.id, d.event, d.attempts, {_INCIDENT_COLUMNS},"
        " c.id, c.kind, c.name, c.url, c.email_to"
        " FROM alert_deliveries d JOIN alert_incidents i ON i.id = d.incident_id"
        " JOIN pools p ON p.id = i.pool_id JOIN alert_channels c ON c.id = d.channel_id"
        " WHERE d.id = ANY(%s) ORDER BY d.created_at, d.event DESC",
        ([row[0] for row in taken],),
    ).fetchall()
    return [Due(row[0], row[1], row[2], Incident(*row[3:13]), *row[13:18]) for row in rows]


def record_attempt(conn: Conn, delivery_id: UUID, error: str | None, retry_in: timedelta) -> str:
    """The result of one attempt; the delivery's status after it."""
    row = conn.execute(
        "UPDATE alert_deliveries SET attempts = attempts + 1,"
        " last_error = coalesce(%s, last_error),"
        " status = CASE WHEN %s::text IS NULL THEN 'sent'"
        "   WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END,"
        " sent_at = CASE WHEN %s::text IS NULL THEN now() END,"
        " next_attempt_at = now() + %s"
        " WHERE id = %s AND status = 'pending' RETURNING status",
        (storable(error, 100), error, MAX_ATTEMPTS, error, retry_in, delivery_id),
    ).fetchone()
    return str(row[0]) if row is not None else "gone"


def list_incidents(
    conn: Conn,
    pool_ids: frozenset[UUID] | None = None,
    *,
    open_only: bool = False,
    limit: int = 100,
) -> list[Incident]:
    """Open incidents first, then the most recent, for `pool_ids` (None: every Pool)."""
    rows = conn.execute(
        f"SELECT {_INCIDENT_COLUMNS} FROM alert_incidents i JOIN pools p ON p.id = i.pool_id"
        " WHERE (%(scope)s::uuid[] IS NULL OR i.pool_id = ANY(%(scope)s::uuid[]))"
        " AND (NOT %(open)s OR i.resolved_at IS NULL)"
        " ORDER BY i.resolved_at IS NOT NULL, i.opened_at DESC, i.id LIMIT %(limit)s",
        {
            "scope": None if pool_ids is None else list(pool_ids),
            "open": open_only,
            "limit": limit,
        },
    ).fetchall()
    return [Incident(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    incident_id: UUID
    channel_name: str
    event: str
    status: str
    attempts: int
    last_error: str | None


def deliveries_of(conn: Conn, incident_ids: Sequence[UUID]) -> list[DeliveryView]:
    if not incident_ids:
        return []
    rows = conn.execute(
        "SELECT d.incident_id, c.name, d.event, d.status, d.attempts, d.last_error"
        " FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id"
        " WHERE d.incident_id = ANY(%s) ORDER BY d.created_at, c.name",
        (list(incident_ids),),
    ).fetchall()
    return [DeliveryView(*row) for row in rows]
