"""The audit trail: reading it, and `record_event` for what is audited without being a
configuration change (configuration changes use `common.record_change`, which also makes
every gateway reload)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import Conn, insert_audit_row
from pooler.store.models import AuditEvent


def list_audit_events(conn: Conn, limit: int = 100) -> list[AuditEvent]:
    """The newest events first."""
    cur = conn.cursor(row_factory=class_row(AuditEvent))
    return cur.execute(
        "SELECT id, created_at, actor, action, target_type, target_id, details, pool_id,"
        " outcome FROM audit_events ORDER BY created_at DESC, id DESC LIMIT %s",
        (limit,),
    ).fetchall()


def record_event(
    conn: Conn,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: UUID | str,
    details: Mapping[str, Any] | None = None,
    pool_id: UUID | None = None,
    outcome: str = "ok",
) -> None:
    """Audit something that changes no configuration (a sign-in, a failure, a sign-out):
    the row only, without the NOTIFY that makes every gateway reload. `details` must hold
    no secrets; `pool_id` is the one Pool the event concerns (None: instance-wide);
    `outcome` 'ok', 'refused' or 'failed' (see `common.insert_audit_row`)."""
    insert_audit_row(
        conn, actor, action, target_type, target_id, details, pool_id=pool_id, outcome=outcome
    )
