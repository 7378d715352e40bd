"""Operator MCP tokens (shown once, stored as an HMAC digest plus a display prefix; no use of
a token is recorded), each operator's own MCP switch, and who a token speaks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.crypto import display_prefix, generate_mcp_token, key_digest
from pooler.store.common import (
    Conn,
    InvalidInputError,
    NotFoundError,
    check_printable,
    record_change,
)
from pooler.store.keys import find_one_by_prefix_or_id
from pooler.store.models import McpToken
from pooler.store.operators import normalize_email

_COLUMNS: Final = (
    "t.id, t.operator_id, o.email AS operator_email, t.name, t.token_prefix, t.status,"
    " t.created_at, t.revoked_at"
)
_FROM: Final = "operator_mcp_tokens t JOIN operators o ON o.id = t.operator_id"


def create_mcp_token(
    conn: Conn, secret_key: bytes, email: str, name: str = "", *, actor: str = "system"
) -> tuple[str, McpToken]:
    """A new token for the operator `email`; the raw token is returned once, never stored."""
    email = normalize_email(email)
    if len(check_printable(name, "a token name")) > 100:
        raise InvalidInputError("a token name has at most 100 characters")
    row = conn.execute("SELECT id FROM operators WHERE email = %s", (email,)).fetchone()
    if row is None:
        raise NotFoundError(f"operator {email!r} not found")
    raw = generate_mcp_token()
    inserted = conn.execute(
        "INSERT INTO operator_mcp_tokens (operator_id, name, token_prefix, token_digest)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (row[0], name, display_prefix(raw), key_digest(secret_key, raw)),
    ).fetchone()
    assert inserted is not None
    token = _get(conn, "t.id = %s", inserted[0])
    assert token is not None
    record_change(
        conn,
        actor=actor,
        action="mcp.token_create",
        target_type="mcp_token",
        target_id=token.id,
        details={"operator": email, "name": name, "prefix": token.token_prefix},
    )
    return raw, token


def list_mcp_tokens(conn: Conn) -> list[McpToken]:
    cur = conn.cursor(row_factory=class_row(McpToken))
    return cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY t.created_at").fetchall()


def find_mcp_token(conn: Conn, secret_key: bytes, raw: str) -> McpToken | None:
    """The active token matching `raw` whose operator is active, else None."""
    return _get(
        conn,
        "t.token_digest = %s AND t.status = 'active' AND o.status = 'active'",
        key_digest(secret_key, raw),
    )


def revoke_mcp_token(conn: Conn, prefix_or_id: str, *, actor: str = "system") -> McpToken:
    token_id = find_one_by_prefix_or_id(
        conn, "operator_mcp_tokens", "token_prefix", prefix_or_id, "MCP token"
    )
    conn.execute(
        "UPDATE operator_mcp_tokens SET status = 'revoked', revoked_at = now()"
        " WHERE id = %s AND status = 'active'",
        (token_id,),
    )
    token = _get(conn, "t.id = %s", token_id)
    assert token is not None
    record_change(
        conn,
        actor=actor,
        action="mcp.token_revoke",
        target_type="mcp_token",
        target_id=token.id,
        details={"prefix": token.token_prefix},
    )
    return token


def _get(conn: Conn, where: str, value: object) -> McpToken | None:
    cur = conn.cursor(row_factory=class_row(McpToken))
    return cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE {where}", (value,)).fetchone()


def delete_mcp_token(conn: Conn, prefix_or_id: str, *, actor: str = "system") -> McpToken:
    """Delete a token (it stops working at once); audited."""
    token_id = find_one_by_prefix_or_id(
        conn, "operator_mcp_tokens", "token_prefix", prefix_or_id, "MCP token"
    )
    token = _get(conn, "t.id = %s", token_id)
    assert token is not None
    conn.execute("DELETE FROM operator_mcp_tokens WHERE id = %s", (token_id,))
    record_change(
        conn,
        actor=actor,
        action="mcp.token_delete",
        target_type="mcp_token",
        target_id=token.id,
        details={"operator": token.operator_email, "prefix": token.token_prefix},
    )
    return token


def operator_tokens(conn: Conn, operator_id: UUID) -> list[McpToken]:
    """The operator's own tokens, oldest first (the console's own settings page)."""
    cur = conn.cursor(row_factory=class_row(McpToken))
    return cur.execute(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE t.operator_id = %s ORDER BY t.created_at, t.id",
        (operator_id,),
    ).fetchall()


def operator_mcp_enabled(conn: Conn, operator_id: UUID) -> bool:
    """The operator's own MCP switch (False for an unknown operator)."""
    row = conn.execute("SELECT mcp_enabled FROM operators WHERE id = %s", (operator_id,)).fetchone()
    return bool(row and row[0])


def delete_own_mcp_token(conn: Conn, operator_id: UUID, token_id: UUID, *, actor: str) -> McpToken:
    """Delete one of the operator's own tokens (audited); another operator's token, or an
    unknown id, is a NotFoundError and nothing changes."""
    row = conn.execute(
        "SELECT id FROM operator_mcp_tokens WHERE id = %s AND operator_id = %s FOR UPDATE",
        (token_id, operator_id),
    ).fetchone()
    if row is None:
        raise NotFoundError("no such MCP token")
    return delete_mcp_token(conn, str(token_id), actor=actor)


def set_operator_mcp(conn: Conn, email: str, enabled: bool, *, actor: str) -> bool:
    """Turn an operator's own MCP switch on or off (audited when it changes); the old value."""
    email = normalize_email(email)
    row = conn.execute(
        "SELECT id, mcp_enabled FROM operators WHERE email = %s FOR UPDATE", (email,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"operator {email!r} not found")
    operator_id, before = row
    if before != enabled:
        conn.execute("UPDATE operators SET mcp_enabled = %s WHERE id = %s", (enabled, operator_id))
        record_change(
            conn,
            actor=actor,
            action="mcp.operator_enable" if enabled else "mcp.operator_disable",
            target_type="operator",
            target_id=operator_id,
            details={"operator": email},
        )
    return bool(before)


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The operator an active MCP token belongs to, as the endpoint's gates need it."""

    operator_id: UUID
    email: str
    role: str
    status: str  # active | disabled
    mcp_enabled: bool
    must_change_password: bool
    pool_ids: frozenset[UUID]  # assigned Pools (an admin's scope)


def token_holder(conn: Conn, secret_key: bytes, raw: str) -> TokenHolder | None:
    """Who the active token `raw` speaks for (whatever their status), else None. One
    indexed lookup by digest; nothing about the use is written."""
    row = conn.execute(
        "SELECT o.id, o.email, o.role, o.status, o.mcp_enabled, o.must_change_password,"
        " ARRAY(SELECT pool_id FROM operator_pool_assignments a WHERE a.operator_id = o.id)"
        " FROM operator_mcp_tokens t JOIN operators o ON o.id = t.operator_id"
        " WHERE t.token_digest = %s AND t.status = 'active'",
        (key_digest(secret_key, raw),),
    ).fetchone()
    if row is None:
        return None
    return TokenHolder(row[0], row[1], row[2], row[3], row[4], row[5], frozenset(row[6]))
