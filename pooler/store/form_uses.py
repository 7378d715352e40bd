"""One-time console forms (`console_form_uses`, migration 0011): a form's random token,
as a keyed digest, claimed by its session in the transaction that does the form's action.

`claim` runs first in that transaction: it inserts the row (a second claim of the same
token waits on the first's primary key, then finds it) or returns the earlier use; the page
then does its action and names what it made with `set_target`. A refused action rolls the
claim back with it, so the same form may be sent again. Rows go with their session (ON
DELETE CASCADE) and a session keeps at most its newest `KEEP_PER_SESSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import Conn

# A session's newest claims kept: a reload of a form older than its 100 latest one-time
# forms would do the action again (the table stays bounded by sessions x 100).
KEEP_PER_SESSION: Final = 100


@dataclass(frozen=True, slots=True)
class FormUse:
    """An earlier use of a form's token: what it did and to what."""

    action: str
    target_type: str
    target_id: UUID | None
    used_at: datetime


def claim(
    conn: Conn, session_id: UUID, digest: bytes, action: str, target_type: str
) -> FormUse | None:
    """Claim the token for `action` in this transaction: None when claimed now (the caller
    does the action), else the earlier use (the caller does nothing). None too, and nothing
    claimed, when the session is gone (its page is refused by then)."""
    inserted = conn.execute(
        "INSERT INTO console_form_uses (session_id, digest, action, target_type)"
        " SELECT id, %s, %s, %s FROM console_sessions WHERE id = %s"
        " ON CONFLICT (session_id, digest) DO NOTHING RETURNING used_at",
        (digest, action, target_type, session_id),
    ).fetchone()
    if inserted is None:
        return _use(conn, session_id, digest)
    _trim(conn, session_id)
    return None


def set_target(conn: Conn, session_id: UUID, digest: bytes, target_id: UUID) -> None:
    """Name what the claimed form's action made or changed (same transaction as `claim`)."""
    conn.execute(
        "UPDATE console_form_uses SET target_id = %s WHERE session_id = %s AND digest = %s",
        (target_id, session_id, digest),
    )


def _use(conn: Conn, session_id: UUID, digest: bytes) -> FormUse | None:
    cur = conn.cursor(row_factory=class_row(FormUse))
    return cur.execute(
        "SELECT action, target_type, target_id, used_at FROM console_form_uses"
        " WHERE session_id = %s AND digest = %s",
        (session_id, digest),
    ).fetchone()


def _trim(conn: Conn, session_id: UUID) -> None:
    conn.execute(
        "DELETE FROM console_form_uses WHERE session_id = %s AND digest IN ("
        " SELECT digest FROM console_form_uses WHERE session_id = %s"
        " ORDER BY used_at DESC OFFSET %s)",
        (session_id, session_id, KEEP_PER_SESSION),
    )


def key_label(conn: Conn, key_id: UUID, pool_ids: frozenset[UUID] | None) -> tuple[str, str] | None:
    """(name, prefix) of the key, if it exists in one of `pool_ids` (None: any Pool)."""
    row = conn.execute(
        "SELECT name, key_prefix FROM pool_api_keys WHERE id = %s"
        " AND (%s::uuid[] IS NULL OR pool_id = ANY(%s::uuid[]))",
        (key_id, _ids(pool_ids), _ids(pool_ids)),
    ).fetchone()
    return (row[0], row[1]) if row else None


def invite_pool_name(conn: Conn, invite_id: UUID, pool_ids: frozenset[UUID] | None) -> str | None:
    """The Pool name of the invite, if it exists in one of `pool_ids` (None: any Pool)."""
    row = conn.execute(
        "SELECT p.name FROM pool_invites i JOIN pools p ON p.id = i.pool_id WHERE i.id = %s"
        " AND (%s::uuid[] IS NULL OR i.pool_id = ANY(%s::uuid[]))",
        (invite_id, _ids(pool_ids), _ids(pool_ids)),
    ).fetchone()
    return str(row[0]) if row else None


def operator_email(conn: Conn, operator_id: UUID) -> str | None:
    row = conn.execute("SELECT email FROM operators WHERE id = %s", (operator_id,)).fetchone()
    return str(row[0]) if row else None


def mcp_token_label(conn: Conn, token_id: UUID) -> tuple[str, str] | None:
    """(name, prefix) of the MCP token, if it still exists."""
    row = conn.execute(
        "SELECT name, token_prefix FROM operator_mcp_tokens WHERE id = %s", (token_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def _ids(pool_ids: frozenset[UUID] | None) -> list[UUID] | None:
    return None if pool_ids is None else list(pool_ids)
