"""Operator console sessions: a random 32-byte token in the browser's cookie, its keyed
digest here, with the operator, client IP and user agent, a CSRF token for its forms, a
14-day life and an idle timeout (an instance setting, applied when the session is read).

A session is 'full' or, between a correct password and the TOTP code, 'totp' (it opens the
code form only). Every sign-in step mints a new token: a token seen before signing in is
never the signed-in one (no fixation).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.crypto import key_digest
from pooler.store.common import Conn
from pooler.store.models import Operator
from pooler.store.operators import OPERATOR_COLUMNS
from pooler.store.text import findable, storable

SESSION_TTL: Final = timedelta(days=14)
# Between the password and the second factor: long enough to open the authenticator app.
SECOND_FACTOR_TTL: Final = timedelta(minutes=10)
STAGES: Final = ("full", "totp")
# A session's last-seen time is written at most this often (a page view need not write).
TOUCH_EVERY: Final = timedelta(seconds=30)
MAX_USER_AGENT: Final = 256
MAX_TOKEN_LEN: Final = 128
SESSION_COLUMNS: Final = (
    "id, operator_id, stage, csrf_token, ip, user_agent, created_at, last_seen_at, expires_at"
)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id: UUID
    operator_id: UUID
    stage: str  # full | totp
    csrf_token: str
    ip: str | None
    user_agent: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:  # the CSRF token stays out of logs and tracebacks
        return f"ConsoleSession(id={self.id}, operator_id={self.operator_id}, stage={self.stage})"


def create_session(
    conn: Conn,
    secret_key: bytes,
    operator_id: UUID,
    *,
    ip: str | None,
    user_agent: str | None,
    stage: str = "full",
) -> tuple[str, ConsoleSession]:
    """A new session: (the raw token for the cookie, shown nowhere else; the record)."""
    token = secrets.token_urlsafe(32)
    cur = conn.cursor(row_factory=class_row(ConsoleSession))
    session = cur.execute(
        "INSERT INTO console_sessions (token_digest, operator_id, stage, csrf_token, ip,"
        " user_agent, expires_at) VALUES (%s, %s, %s, %s, %s, %s, now() + %s)"
        f" RETURNING {SESSION_COLUMNS}",
        (
            key_digest(secret_key, token),
            operator_id,
            stage,
            secrets.token_urlsafe(32),
            storable(ip, 64),
            storable(user_agent, MAX_USER_AGENT),
            SESSION_TTL if stage == "full" else SECOND_FACTOR_TTL,
        ),
    ).fetchone()
    assert session is not None
    return token, session


def load_session(
    conn: Conn, secret_key: bytes, token: str, idle_timeout: timedelta
) -> tuple[ConsoleSession, Operator] | None:
    """The live session of `token` and its (active) operator, else None. An expired or idle
    session is deleted; a live one has its last-seen time moved on."""
    if not token or len(token) > MAX_TOKEN_LEN or not findable(token):
        return None
    digest = key_digest(secret_key, token)
    row = conn.execute(
        "SELECT id, expires_at <= now() OR last_seen_at <= now() - %s,"
        " last_seen_at <= now() - %s FROM console_sessions WHERE token_digest = %s",
        (idle_timeout, TOUCH_EVERY, digest),
    ).fetchone()
    if row is None:
        return None
    session_id, dead, stale = row
    if dead:
        conn.execute("DELETE FROM console_sessions WHERE id = %s", (session_id,))
        return None
    if stale:
        conn.execute(
            "UPDATE console_sessions SET last_seen_at = now() WHERE id = %s", (session_id,)
        )
    session = _session(conn, session_id)
    cur = conn.cursor(row_factory=class_row(Operator))
    operator = cur.execute(
        f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = %s AND status = 'active'",
        (session.operator_id,),
    ).fetchone()
    return (session, operator) if operator is not None else None


def _session(conn: Conn, session_id: UUID) -> ConsoleSession:
    cur = conn.cursor(row_factory=class_row(ConsoleSession))
    found = cur.execute(
        f"SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id = %s", (session_id,)
    ).fetchone()
    assert found is not None
    return found


def list_sessions(conn: Conn, operator_id: UUID) -> list[ConsoleSession]:
    """An operator's live sessions, the most recently used first."""
    cur = conn.cursor(row_factory=class_row(ConsoleSession))
    return cur.execute(
        f"SELECT {SESSION_COLUMNS} FROM console_sessions"
        " WHERE operator_id = %s AND expires_at > now() AND stage = 'full'"
        " ORDER BY last_seen_at DESC",
        (operator_id,),
    ).fetchall()


def revoke_session(conn: Conn, session_id: UUID | str, operator_id: UUID) -> bool:
    """End one of an operator's sessions; False if it was not theirs or is gone."""
    row = conn.execute(
        "DELETE FROM console_sessions WHERE id = %s AND operator_id = %s RETURNING id",
        (str(session_id), operator_id),
    ).fetchone()
    return row is not None


def revoke_other_sessions(conn: Conn, operator_id: UUID, keep: UUID | None) -> int:
    """End every session of an operator except `keep` (None: all); how many ended."""
    cur = conn.execute(
        "DELETE FROM console_sessions WHERE operator_id = %s AND id IS DISTINCT FROM %s",
        (operator_id, keep),
    )
    return cur.rowcount


def end_session_of_token(conn: Conn, secret_key: bytes, token: str) -> None:
    if token and len(token) <= MAX_TOKEN_LEN and findable(token):
        conn.execute(
            "DELETE FROM console_sessions WHERE token_digest = %s", (key_digest(secret_key, token),)
        )


def delete_expired_sessions(conn: Conn) -> int:
    return conn.execute("DELETE FROM console_sessions WHERE expires_at <= now()").rowcount
