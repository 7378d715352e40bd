"""Quota evidence as stored: every window of every limit family, and credits.

Written behind by the gateways (latest observation wins per account, family and window, so
several nodes can write in any order) and announced on QUOTA_CHANNEL; read back at start-up
and when another node announces new evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from pooler.db import notify
from pooler.store.common import QUOTA_CHANNEL, Conn
from pooler.store.text import storable

SOURCES: Final = ("headers", "event", "error", "usage_api")


@dataclass(frozen=True, slots=True)
class WindowRecord:
    family: str
    window: str  # primary | secondary
    used_percent: float
    window_minutes: int | None
    reset_at: datetime | None
    observed_at: datetime
    limit_name: str | None = None
    source: str = "headers"


@dataclass(frozen=True, slots=True)
class CreditsRecord:
    has_credits: bool
    unlimited: bool
    balance: str | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class AccountQuota:
    windows: tuple[WindowRecord, ...] = ()
    credits: CreditsRecord | None = None


def record_quota(
    conn: Conn,
    account_id: UUID,
    windows: Sequence[WindowRecord],
    credits: CreditsRecord | None = None,
    origin: str = "",
) -> bool:
    """Store evidence for one account; False when the account no longer exists. Announced
    on QUOTA_CHANNEL as `account id[/origin]` (a node skips its own announcements)."""
    exists = conn.execute("SELECT 1 FROM upstream_accounts WHERE id = %s", (account_id,))
    if exists.fetchone() is None:
        return False
    with conn.cursor() as cur:
        if windows:
            cur.executemany(
                "INSERT INTO quota_windows (account_id, family, window_kind, used_percent,"
                " window_minutes, reset_at, observed_at, limit_name, source)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (account_id, family, window_kind) DO UPDATE SET"
                " used_percent = EXCLUDED.used_percent,"
                " window_minutes = EXCLUDED.window_minutes, reset_at = EXCLUDED.reset_at,"
                " observed_at = EXCLUDED.observed_at,"
                " limit_name = coalesce(EXCLUDED.limit_name, quota_windows.limit_name),"
                " source = EXCLUDED.source"
                " WHERE quota_windows.observed_at <= EXCLUDED.observed_at",
                [
                    (
                        account_id,
                        storable(w.family, 100),
                        w.window,
                        max(0.0, min(1000.0, w.used_percent)),
                        _positive_int(w.window_minutes),
                        w.reset_at,
                        w.observed_at,
                        storable(w.limit_name or None, 200),
                        w.source if w.source in SOURCES else "headers",
                    )
                    for w in windows
                    if w.window in ("primary", "secondary")
                ],
            )
        if credits is not None:
            cur.execute(
                "INSERT INTO account_credits (account_id, has_credits, unlimited, balance,"
                " observed_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (account_id) DO UPDATE SET has_credits = EXCLUDED.has_credits,"
                " unlimited = EXCLUDED.unlimited, balance = EXCLUDED.balance,"
                " observed_at = EXCLUDED.observed_at"
                " WHERE account_credits.observed_at <= EXCLUDED.observed_at",
                (
                    account_id,
                    credits.has_credits,
                    credits.unlimited,
                    storable(credits.balance or None, 64),
                    credits.observed_at,
                ),
            )
    notify(conn, QUOTA_CHANNEL, f"{account_id}/{origin}" if origin else str(account_id))
    return True


def _positive_int(value: int | None) -> int | None:
    """What the column's CHECK and type allow (the upstream chose the number)."""
    return value if value is not None and 0 < value < 2**31 else None


def load_quota(conn: Conn, account_ids: Sequence[UUID] | None = None) -> dict[UUID, AccountQuota]:
    """Stored evidence per account (all accounts when `account_ids` is None)."""
    where, params = (
        ("", ()) if account_ids is None else (" WHERE account_id = ANY(%s)", (list(account_ids),))
    )
    windows: defaultdict[UUID, list[WindowRecord]] = defaultdict(list)
    for row in conn.execute(
        "SELECT account_id, family, window_kind, used_percent::float8, window_minutes,"
        f" reset_at, observed_at, limit_name, source FROM quota_windows{where}"
        " ORDER BY account_id, family, window_kind",
        params,
    ):
        windows[row[0]].append(WindowRecord(*row[1:]))
    credits: dict[UUID, CreditsRecord] = {}
    for row in conn.execute(
        "SELECT account_id, has_credits, unlimited, balance, observed_at"
        f" FROM account_credits{where}",
        params,
    ):
        credits[row[0]] = CreditsRecord(*row[1:])
    return {
        account_id: AccountQuota(tuple(windows.get(account_id, ())), credits.get(account_id))
        for account_id in set(windows) | set(credits)
    }
