"""Reading the audit trail (writing is `common.record_change`, inside each mutation)."""

from __future__ import annotations

from psycopg.rows import class_row

from pooler.store.common import Conn
from pooler.store.models import AuditEvent


def list_audit_events(conn: Conn, limit: int = 100) -> list[AuditEvent]:
    """The newest events first."""
    cur = conn.cursor(row_factory=class_row(AuditEvent))
    return cur.execute(
        "SELECT id, created_at, actor, action, target_type, target_id, details"
        " FROM audit_events ORDER BY created_at DESC, id LIMIT %s",
        (limit,),
    ).fetchall()
