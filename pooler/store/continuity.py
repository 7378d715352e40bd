"""Continuity pins written behind from memory (DESIGN §4): hashed continuity key -> the
account holding its prompt cache, so a restart or another node keeps conversations put."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from pooler.db import notify
from pooler.store.common import CONTINUITY_CHANNEL, Conn
from pooler.store.models import ContinuityPin


def upsert_continuity_pins(conn: Conn, rows: Sequence[ContinuityPin], origin: str = "") -> int:
    """Insert or move pins; a pin naming a deleted Pool or account is skipped (the batch
    still goes in). Announced on CONTINUITY_CHANNEL per Pool as `pool id[/origin]` (a node
    skips its own announcements). Returns rows written."""
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO continuity_pins (pool_id, key_digest, account_id, expires_at)"
            " SELECT %(pool)s, %(digest)s, %(account)s, %(expires)s"
            " WHERE EXISTS (SELECT 1 FROM pools WHERE id = %(pool)s)"
            " AND EXISTS (SELECT 1 FROM upstream_accounts WHERE id = %(account)s)"
            " ON CONFLICT (pool_id, key_digest) DO UPDATE SET account_id = EXCLUDED.account_id,"
            " expires_at = EXCLUDED.expires_at, updated_at = now()",
            [
                {
                    "pool": pin.pool_id,
                    "digest": pin.key_digest,
                    "account": pin.account_id,
                    "expires": pin.expires_at,
                }
                for pin in rows
            ],
        )
        written = max(cur.rowcount, 0)
    suffix = f"/{origin}" if origin else ""
    for pool_id in sorted({pin.pool_id for pin in rows}):
        notify(conn, CONTINUITY_CHANNEL, f"{pool_id}{suffix}")
    return written


def load_continuity_pins(conn: Conn, pool_id: UUID) -> list[ContinuityPin]:
    """The Pool's unexpired pins."""
    return load_continuity_pins_since(conn, pool_id, None)[0]


def load_continuity_pins_since(
    conn: Conn, pool_id: UUID, since: datetime | None
) -> tuple[list[ContinuityPin], datetime | None]:
    """The Pool's unexpired pins written after `since` (all when None), and the latest
    write time among them (the next call's `since`)."""
    rows = conn.execute(
        "SELECT pool_id, key_digest, account_id, expires_at, updated_at FROM continuity_pins"
        " WHERE pool_id = %s AND expires_at > now()"
        " AND updated_at > coalesce(%s::timestamptz, '-infinity')",
        (pool_id, since),
    ).fetchall()
    latest = max((row[4] for row in rows), default=since)
    return [ContinuityPin(*row[:4]) for row in rows], latest


def delete_expired_continuity_pins(conn: Conn, now: datetime | None = None) -> int:
    cur = conn.execute(
        "DELETE FROM continuity_pins WHERE expires_at <= coalesce(%s, now())", (now,)
    )
    return cur.rowcount
