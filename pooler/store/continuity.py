"""Continuity pins written behind from memory (DESIGN §4): hashed continuity key -> the
account holding its prompt cache, so a restart or another node keeps conversations put."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import orjson

from pooler.store.common import CONTINUITY_CHANNEL, Conn
from pooler.store.models import ContinuityPin

# One statement for the whole batch and its announcements: the pins as one JSON parameter
# (psycopg adapts a list parameter in Python, element by element; one text is adapted in
# C), those naming a Pool and an account that exist upserted, and one NOTIFY per Pool
# (delivered at commit). A statement per pin and one more per NOTIFY cost the gateway
# ~25 µs of CPU per pin and a round trip each.
_UPSERT_PINS = """
WITH pins AS (
    SELECT p.pool_id, decode(p.key_digest, 'hex') AS key_digest, p.account_id, p.expires_at
    FROM jsonb_to_recordset(%s::jsonb)
        AS p (pool_id uuid, key_digest text, account_id uuid, expires_at timestamptz)
), written AS (
    INSERT INTO continuity_pins (pool_id, key_digest, account_id, expires_at)
    SELECT p.pool_id, p.key_digest, p.account_id, p.expires_at FROM pins p
    WHERE EXISTS (SELECT 1 FROM pools WHERE id = p.pool_id)
    AND EXISTS (SELECT 1 FROM upstream_accounts WHERE id = p.account_id)
    ON CONFLICT (pool_id, key_digest) DO UPDATE SET account_id = EXCLUDED.account_id,
        expires_at = EXCLUDED.expires_at, updated_at = now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM written),
    (SELECT count(pg_notify(%s, pool_id::text || %s)) FROM (SELECT DISTINCT pool_id FROM pins))
"""


def upsert_continuity_pins(conn: Conn, rows: Sequence[ContinuityPin], origin: str = "") -> int:
    """Insert or move pins; a pin naming a deleted Pool or account is skipped (the batch
    still goes in). Announced on CONTINUITY_CHANNEL per Pool as `pool id[/origin]` (a node
    skips its own announcements). Returns rows written. One statement: it needs no
    transaction of its own (`Database.run(..., autocommit=True)` may run it)."""
    if not rows:
        return 0
    # The last of a key's pins wins, as if written one after the other (one statement
    # cannot upsert a row twice).
    latest = {(pin.pool_id, pin.key_digest): pin for pin in rows}
    pins = orjson.dumps(
        [
            {
                "pool_id": str(pin.pool_id),
                "key_digest": bytes(pin.key_digest).hex(),
                "account_id": str(pin.account_id),
                "expires_at": pin.expires_at.isoformat(),
            }
            for pin in latest.values()
        ]
    ).decode()
    found = conn.execute(
        _UPSERT_PINS, (pins, CONTINUITY_CHANNEL, f"/{origin}" if origin else "")
    ).fetchone()
    return int(found[0]) if found else 0


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
