"""What the Upstreams pages show about accounts: the stored facts (read in one transaction,
scoped to the operator's Pools) joined with the live state of the gateway's account actors
(the PoolSupervisor's snapshots, in memory) and the router's verdict
(`pooler.routing.verdict`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Final
from uuid import UUID

from psycopg.rows import dict_row

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, call
from pooler.routing.snapshot import AccountSnapshot
from pooler.routing.verdict import (
    ROUTE_CLASSES,
    PauseInfo,
    Reason,
    usable_now,
    when,
    why_not_serving,
)
from pooler.store.common import Conn
from pooler.store.text import storable

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

SNAPSHOT_TIMEOUT_S: Final = 5.0
WINDOW_NAMES: Final = {"primary": "short", "secondary": "weekly"}


@dataclass(frozen=True, slots=True)
class PoolLink:
    pool_id: UUID
    name: str
    status: str  # the assignment's: active | disabled
    weight: int


@dataclass(frozen=True, slots=True)
class QuotaBar:
    family: str
    window: str
    used_percent: float
    window_minutes: int | None
    reset_at: datetime | None
    observed_at: datetime
    source: str
    limit_name: str | None

    @property
    def span(self) -> str:
        """`5h`, `7d`: the window's length (its kind when the length is unknown)."""
        minutes = self.window_minutes
        if not minutes:
            return WINDOW_NAMES.get(self.window, self.window)
        if minutes % 1440 == 0:
            return f"{minutes // 1440}d"
        return f"{minutes / 60:g}h" if minutes >= 60 else f"{minutes}m"

    @property
    def name(self) -> str:
        family = "" if self.family == "codex" else f"{self.limit_name or self.family} · "
        return f"{family}{self.span} window"

    @property
    def width(self) -> int:
        return round(min(100.0, max(0.0, self.used_percent)))

    @property
    def short(self) -> str:
        return f"{self.span} {self.used_percent:.0f}%"


@dataclass(frozen=True, slots=True)
class Credits:
    has_credits: bool
    unlimited: bool
    balance: str | None


@dataclass(slots=True)
class AccountRow:
    id: UUID
    label: str
    email: str | None
    plan_type: str | None
    lifecycle: str
    lifecycle_reason: str | None
    access_token_expires_at: datetime | None
    last_refresh_at: datetime | None
    created_at: datetime
    pools: list[PoolLink] = field(default_factory=list)
    quota: list[QuotaBar] = field(default_factory=list)
    credits: Credits | None = None
    pause: PauseInfo | None = None

    @property
    def masked_email(self) -> str:
        return mask_email(self.email)

    @property
    def reason(self) -> str | None:
        """Why the lifecycle is what it is (an operator's pause reason, the auth server's
        refusal), as stored: printable, bounded."""
        return storable(self.lifecycle_reason, 300) if self.lifecycle_reason else None

    @property
    def last_error(self) -> str | None:
        """The reason, unless it is an operator's (a pause is not an error)."""
        return None if self.lifecycle in ("active", "paused") else self.reason


@dataclass(frozen=True, slots=True)
class Live:
    """An account's live state: the snapshot (None: no actor runs for it here) and the
    verdict in each active Pool it is in (`(Pool name, reasons)`)."""

    snapshot: AccountSnapshot | None
    verdicts: list[tuple[str, list[Reason]]]
    available: bool = True  # False: the supervisor did not answer

    @property
    def usable(self) -> bool:
        return self.available and any(usable_now(reasons) for _, reasons in self.verdicts)

    def circuits(self, now: float) -> list[tuple[str, str]]:
        """Each route class's circuit in words."""
        out = []
        for route_class in ROUTE_CLASSES:
            view = self.snapshot.circuits.get(route_class) if self.snapshot else None
            if view is None:
                state = "closed"
            elif view.open_until > now:
                state = f"open until {when(view.open_until)}"
            elif view.probing:
                state = "half-open: a probe is in flight"
            else:
                state = "closed"
            out.append((route_class, state))
        return out


def mask_email(email: str | None) -> str:
    """`jo•••@example.com`: enough to tell accounts apart, not to read the address."""
    if not email:
        return "-"
    local, at, domain = email.partition("@")
    if not at:
        return local[:2] + "•••"
    return f"{local[:2]}•••@{domain}"


def _scope(pool_ids: frozenset[UUID] | None) -> list[UUID] | None:
    return list(pool_ids) if pool_ids is not None else None


def load_accounts(
    conn: Conn, pool_ids: frozenset[UUID] | None, account_id: UUID | None = None
) -> list[AccountRow]:
    """The accounts the operator may see (assigned to one of `pool_ids`; every account for
    None), each with its assignments to those Pools, quota windows, credits and last pause."""
    scope = _scope(pool_ids)
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        "SELECT a.id, a.label, a.email, a.plan_type, a.lifecycle, a.lifecycle_reason,"
        " a.access_token_expires_at, a.last_refresh_at, a.created_at FROM upstream_accounts a"
        " WHERE (%(scope)s::uuid[] IS NULL OR EXISTS (SELECT 1 FROM pool_assignments pa"
        "  WHERE pa.account_id = a.id AND pa.pool_id = ANY(%(scope)s::uuid[])))"
        " AND (%(one)s::uuid IS NULL OR a.id = %(one)s::uuid) ORDER BY a.label, a.id",
        {"scope": scope, "one": account_id},
    ).fetchall()
    accounts = {row["id"]: AccountRow(**row) for row in rows}
    if not accounts:
        return []
    ids = list(accounts)
    for account, pool_id, name, status, weight in conn.execute(
        "SELECT pa.account_id, p.id, p.name, pa.status, pa.weight FROM pool_assignments pa"
        " JOIN pools p ON p.id = pa.pool_id WHERE pa.account_id = ANY(%s)"
        " AND (%s::uuid[] IS NULL OR p.id = ANY(%s::uuid[])) ORDER BY p.name",
        (ids, scope, scope),
    ).fetchall():
        accounts[account].pools.append(PoolLink(pool_id, name, status, weight))
    for row in cur.execute(
        "SELECT account_id, family, window_kind AS window, used_percent::float8 AS used_percent,"
        " window_minutes, reset_at, observed_at, source, limit_name FROM quota_windows"
        " WHERE account_id = ANY(%s) ORDER BY account_id, family <> 'codex', family,"
        " window_kind",
        (ids,),
    ).fetchall():
        accounts[row.pop("account_id")].quota.append(QuotaBar(**row))
    for account, has, unlimited, balance in conn.execute(
        "SELECT account_id, has_credits, unlimited, balance FROM account_credits"
        " WHERE account_id = ANY(%s)",
        (ids,),
    ).fetchall():
        accounts[account].credits = Credits(has, unlimited, balance)
    paused = [a for a in accounts.values() if a.lifecycle == "paused"]
    if paused:
        for target, actor, at in conn.execute(
            "SELECT DISTINCT ON (target_id) target_id, actor, created_at FROM audit_events"
            " WHERE target_type = 'account' AND target_id = ANY(%s)"
            " AND action = 'upstream_account.lifecycle' AND details->>'to' = 'paused'"
            " ORDER BY target_id, created_at DESC",
            ([str(a.id) for a in paused],),
        ).fetchall():
            accounts[UUID(target)].pause = PauseInfo(actor, at.timestamp())
    return list(accounts.values())


def other_pools(conn: Conn, pool_ids: frozenset[UUID] | None) -> list[tuple[UUID, str]]:
    """The Pools the operator may assign accounts to: (id, name) by name."""
    scope = _scope(pool_ids)
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT id, name FROM pools WHERE %s::uuid[] IS NULL OR id = ANY(%s::uuid[])"
            " ORDER BY name",
            (scope, scope),
        ).fetchall()
    ]


async def live_state(gw: Gateway, accounts: list[AccountRow]) -> dict[UUID, Live]:
    """Each account's snapshot from the PoolSupervisor (one question per Pool involved) and
    its verdict in each of its active Pools, with that Pool's quota threshold."""
    pool_ids = {link.pool_id for a in accounts for link in a.pools if link.status == "active"}
    snapshots: dict[str, AccountSnapshot] = {}
    available = True
    for pool_id in sorted(pool_ids, key=str):
        try:
            found: list[AccountSnapshot] = await call(
                gw.pool_mailbox,
                partial(m.PoolSnapshots, str(pool_id)),
                timeout=SNAPSHOT_TIMEOUT_S,
            )
        except (CallTimeout, ActorDead):
            available = False
            break
        for one in found:
            snapshots[one.account_id] = one
    now = time.time()
    freshness = gw.instance_settings.quota_freshness_seconds

    def threshold(pool_id: UUID) -> float:
        return gw.pool_policy(str(pool_id)).quota_threshold_percent

    return {
        account.id: verdicts_of(
            account, snapshots.get(str(account.id)), threshold, freshness, now, available
        )
        for account in accounts
    }


def verdicts_of(
    account: AccountRow,
    snapshot: AccountSnapshot | None,
    threshold: Callable[[UUID], float],
    freshness: float,
    now: float,
    available: bool = True,
) -> Live:
    """The account's verdict in each Pool it is actively assigned to, from its snapshot
    (the supervisor's, or one built from the store) and each Pool's quota threshold."""
    verdicts: defaultdict[str, list[Reason]] = defaultdict(list)
    for link in account.pools:
        if link.status != "active":
            continue
        verdicts[link.name] = why_not_serving(
            snapshot,
            now,
            threshold=threshold(link.pool_id),
            freshness=freshness,
            lifecycle_reason=account.reason,
            pause=account.pause,
        )
    return Live(snapshot, list(verdicts.items()), available)
