"""Pool API keys: shown once, stored as an HMAC-SHA256 digest plus a display prefix."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final
from uuid import UUID

from psycopg import sql
from psycopg.rows import class_row

from pooler.crypto import display_prefix, generate_pool_key, key_digest
from pooler.store.common import ConflictError, Conn, InvalidInputError, NotFoundError, record_change
from pooler.store.models import ApiKey
from pooler.store.pools import get_pool

_COLUMNS: Final = (
    "k.id, k.pool_id, p.name AS pool_name, k.name, k.key_prefix, k.status, k.created_at,"
    " k.last_used_at, k.revoked_at"
)
_FROM: Final = "pool_api_keys k JOIN pools p ON p.id = k.pool_id"


def create_key(
    conn: Conn, secret_key: bytes, pool_name: str, name: str, *, actor: str = "system"
) -> tuple[str, ApiKey]:
    """A new key for the Pool; the raw key is returned once and never stored."""
    if len(name) > 100:
        raise InvalidInputError("a key name has at most 100 characters")
    pool = get_pool(conn, pool_name)
    raw = generate_pool_key()
    row = conn.execute(
        "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (pool.id, name, display_prefix(raw), key_digest(secret_key, raw)),
    ).fetchone()
    assert row is not None
    key = _get(conn, row[0])
    record_change(
        conn,
        actor=actor,
        action="api_key.create",
        target_type="api_key",
        target_id=key.id,
        details={"pool": pool_name, "name": name, "prefix": key.key_prefix},
    )
    return raw, key


def list_keys(conn: Conn, pool_name: str | None = None) -> list[ApiKey]:
    cur = conn.cursor(row_factory=class_row(ApiKey))
    if pool_name is None:
        return cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY k.created_at").fetchall()
    pool = get_pool(conn, pool_name)
    return cur.execute(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE k.pool_id = %s ORDER BY k.created_at", (pool.id,)
    ).fetchall()


def revoke_key(conn: Conn, prefix_or_id: str, *, actor: str = "system") -> ApiKey:
    """Revoke by key id or display prefix (an ambiguous prefix is refused)."""
    key_id = find_one_by_prefix_or_id(conn, "pool_api_keys", "key_prefix", prefix_or_id, "key")
    conn.execute(
        "UPDATE pool_api_keys SET status = 'revoked', revoked_at = now()"
        " WHERE id = %s AND status = 'active'",
        (key_id,),
    )
    key = _get(conn, key_id)
    record_change(
        conn,
        actor=actor,
        action="api_key.revoke",
        target_type="api_key",
        target_id=key.id,
        details={"pool": key.pool_name, "prefix": key.key_prefix},
    )
    return key


def mark_keys_used(conn: Conn, last_used: Mapping[UUID, datetime]) -> None:
    """Record when keys were last used (batched by the gateway; not audited, no NOTIFY)."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE pool_api_keys SET last_used_at = greatest(last_used_at, %s) WHERE id = %s",
            [(when, key_id) for key_id, when in last_used.items()],
        )


def find_one_by_prefix_or_id(
    conn: Conn, table: str, prefix_column: str, prefix_or_id: str, what: str
) -> UUID:
    """The id of the one row whose id or display prefix is `prefix_or_id`."""
    try:
        ident: UUID | None = UUID(prefix_or_id)
    except ValueError:
        ident = None
    query = sql.SQL("SELECT id FROM {} WHERE id = %s OR {} = %s LIMIT 2").format(
        sql.Identifier(table), sql.Identifier(prefix_column)
    )
    rows = conn.execute(query, (ident, prefix_or_id)).fetchall()
    # never echo what might be a whole raw key pasted by mistake
    shown = prefix_or_id if len(prefix_or_id) <= 36 else display_prefix(prefix_or_id) + "..."
    if not rows:
        raise NotFoundError(f"no {what} with id or prefix {shown!r}")
    if len(rows) > 1:
        raise ConflictError(f"prefix {shown!r} matches several; use the {what} id")
    result: UUID = rows[0][0]
    return result


def _get(conn: Conn, key_id: UUID) -> ApiKey:
    cur = conn.cursor(row_factory=class_row(ApiKey))
    key = cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE k.id = %s", (key_id,)).fetchone()
    if key is None:
        raise NotFoundError(f"key {key_id} not found")
    return key
