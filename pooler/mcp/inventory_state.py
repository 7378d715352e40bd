"""What the inventory tools know about accounts beyond their stored rows: the verdict ("why
is this account not taking traffic now"), each Pool's remaining capacity, and the accounts
at risk of running out within the hour.

The console takes the verdict's live parts (in-flight requests, circuits, an upstream's
cooling or usage-limit block, a crashed actor) from the gateway's memory. A tool runs in a
worker thread with a database connection, so by default it rebuilds each account's routing
snapshot from the store (lifecycle, stored quota windows and credits: the evidence the
supervisor itself starts from) and applies the same verdict and capacity rules
(`upstream_view.verdicts_of`, `overview_figures.pool_figures`). A server that can reach the
supervisor may pass a `LiveSource` (e.g. the console's `live_state` run with
`trio.from_thread.run`); its answer is used when the supervisor answered for every account.

At risk: a usable account whose window, at its recent rate, reaches the Pool's threshold
within `RISK_HORIZON` and before the window resets. The rate comes from the request log
(one statement): the account's requests over the last `RECENT` times what one request has
cost it so far in this window (its used percent over its requests since the window began).
An account used outside the gateway looks more expensive per request than it is; one
with no request since the window began has no rate and is not flagged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from uuid import UUID

from pooler.admin_ui.overview_figures import PoolFigures, WindowCapacity, members_of, pool_figures
from pooler.admin_ui.upstream_view import AccountRow, Live, QuotaBar, verdicts_of
from pooler.routing.snapshot import AccountSnapshot
from pooler.routing.verdict import usable_now
from pooler.store import quota as quota_store
from pooler.store.common import Conn
from pooler.store.instance_settings import get_instance_settings
from pooler.store.models import Pool
from pooler.store.overview import PoolActivity
from pooler.web.runtime_store import quota_snapshot

LiveSource = Callable[[Sequence[AccountRow]], Mapping[UUID, Live]]
StateSource = Literal["stored", "live"]

RECENT: Final = timedelta(minutes=30)
RISK_HORIZON: Final = timedelta(hours=1)
DEFAULT_FAMILY: Final = "codex"


def _running(account: AccountRow, pools: Mapping[UUID, Pool]) -> bool:
    """Does the gateway run an actor for it: an active assignment to an active Pool."""
    return any(
        link.status == "active"
        and (p := pools.get(link.pool_id)) is not None
        and p.status == "active"
        for link in account.pools
    )


def stored_snapshot(account: AccountRow, quota: quota_store.AccountQuota | None) -> AccountSnapshot:
    """The routing snapshot the supervisor would start this account from."""
    base = quota_snapshot(str(account.id), quota)
    return dataclasses.replace(
        base, label=account.label, lifecycle=account.lifecycle, plan_type=account.plan_type
    )


def stored_live(
    conn: Conn, accounts: Sequence[AccountRow], pools: Mapping[UUID, Pool], now: float
) -> dict[UUID, Live]:
    """Each account's verdicts from the store alone (see the module's docstring)."""
    if not accounts:
        return {}
    stored = quota_store.load_quota(conn, [a.id for a in accounts])
    freshness = get_instance_settings(conn)[1].quota_freshness_seconds

    def threshold(pool_id: UUID) -> float:
        pool = pools.get(pool_id)
        return float(pool.quota_threshold_percent) if pool is not None else 100.0

    return {
        a.id: verdicts_of(
            a,
            stored_snapshot(a, stored.get(a.id)) if _running(a, pools) else None,
            threshold,
            freshness,
            now,
        )
        for a in accounts
    }


def account_states(
    conn: Conn,
    accounts: Sequence[AccountRow],
    pools: Mapping[UUID, Pool],
    now: float,
    live: LiveSource | None,
) -> tuple[dict[UUID, Live], StateSource]:
    """The live verdicts when a source is given and the supervisor answered, else the
    stored ones; and which it is."""
    if live is not None and accounts:
        found = live(accounts)
        if all(state.available for state in found.values()):
            return dict(found), "live"
    return stored_live(conn, accounts, pools, now), "stored"


@dataclass(frozen=True, slots=True)
class AtRisk:
    account_id: UUID
    label: str
    window: str  # primary | secondary
    used_percent: float
    percent_per_minute: float
    minutes_to_limit: float
    reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class PoolCapacity:
    pool: Pool
    accounts: int
    usable: int
    windows: tuple[WindowCapacity, ...]
    at_risk: tuple[AtRisk, ...]


def _window_start(bar: QuotaBar) -> datetime | None:
    if bar.reset_at is None or not bar.window_minutes:
        return None
    return bar.reset_at - timedelta(minutes=bar.window_minutes)


def _counting(
    bars: Sequence[tuple[UUID, QuotaBar]], now: datetime
) -> list[tuple[UUID, str, datetime]]:
    return [
        (account_id, bar.window, start)
        for account_id, bar in bars
        if bar.reset_at is not None
        and bar.reset_at > now
        and (start := _window_start(bar)) is not None
    ]


_COUNTS_SQL: Final = """
SELECT s.account_id, s.kind, c.in_window, c.recent
FROM unnest(%(ids)s::uuid[], %(kinds)s::text[], %(starts)s::timestamptz[])
    AS s (account_id, kind, since)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE created_at >= s.since) AS in_window,
           count(*) FILTER (WHERE created_at >= %(now)s - %(recent)s) AS recent
    FROM request_logs
    WHERE account_id = s.account_id AND created_at >= least(s.since, %(now)s - %(recent)s)
) c
"""


def request_counts(
    conn: Conn, windows: Sequence[tuple[UUID, str, datetime]], now: datetime
) -> dict[tuple[UUID, str], tuple[int, int]]:
    """Per (account, window): its requests since the window began and over `RECENT`."""
    if not windows:
        return {}
    rows = conn.execute(
        _COUNTS_SQL,
        {
            "ids": [w[0] for w in windows],
            "kinds": [w[1] for w in windows],
            "starts": [w[2] for w in windows],
            "now": now,
            "recent": RECENT,
        },
    ).fetchall()
    return {(a, kind): (int(in_window), int(recent)) for a, kind, in_window, recent in rows}


def risk_of(
    account: AccountRow, bar: QuotaBar, counts: tuple[int, int], threshold: float, now: datetime
) -> AtRisk | None:
    """The account's window if, at its recent rate, it reaches `threshold` within the
    horizon and before it resets. Pure."""
    in_window, recent = counts
    if in_window <= 0 or recent <= 0 or bar.used_percent >= threshold:
        return None
    per_minute = recent / (RECENT.total_seconds() / 60) * (bar.used_percent / in_window)
    if per_minute <= 0:
        return None
    minutes = (threshold - bar.used_percent) / per_minute
    reaches = now + timedelta(minutes=minutes)
    if reaches > now + RISK_HORIZON or (bar.reset_at is not None and reaches >= bar.reset_at):
        return None
    return AtRisk(
        account.id, account.label, bar.window, bar.used_percent, per_minute, minutes, bar.reset_at
    )


def _usable(state: Live | None, pool: Pool) -> bool:
    if state is None or not state.available or pool.status != "active":
        return False
    reasons = dict(state.verdicts).get(pool.name)
    return reasons is not None and usable_now(reasons)


def capacities(
    conn: Conn,
    pools: Sequence[Pool],
    accounts: Sequence[AccountRow],
    live: Mapping[UUID, Live],
    now: float,
) -> list[PoolCapacity]:
    """Each Pool's capacity per window (the overview's figures) and its accounts at risk."""
    moment = datetime.fromtimestamp(now, UTC)
    usable_of: dict[UUID, list[AccountRow]] = {}
    figures: dict[UUID, tuple[PoolFigures, int]] = {}
    for pool in pools:
        members = members_of(pool, accounts)
        found, _ = pool_figures(pool, members, live, PoolActivity(), 0, now)
        figures[pool.id] = (found, len(members))
        usable_of[pool.id] = [a for a in members if _usable(live.get(a.id), pool)]
    bars = {
        (a.id, bar.window): bar
        for members in usable_of.values()
        for a in members
        for bar in a.quota
        if bar.family == DEFAULT_FAMILY
    }
    counts = request_counts(conn, _counting([(k[0], b) for k, b in bars.items()], moment), moment)
    out = []
    for pool in pools:
        found, total = figures[pool.id]
        risks = [
            risk
            for a in usable_of[pool.id]
            for bar in a.quota
            if bar.family == DEFAULT_FAMILY
            and (c := counts.get((a.id, bar.window))) is not None
            and (risk := risk_of(a, bar, c, float(pool.quota_threshold_percent), moment))
            is not None
        ]
        risks.sort(key=lambda r: r.minutes_to_limit)
        out.append(PoolCapacity(pool, total, found.usable or 0, found.windows, tuple(risks)))
    return out
