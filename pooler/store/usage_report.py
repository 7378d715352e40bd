"""A Pool's usage over a window, per UTC day, per key and per account, with its
API-equivalent cost (`pooler admin usage`): read from the rollups (`pooler.store.rollups`),
never from raw rows, so it agrees with the stats page and outlives retention.

The window covers whole UTC hours, as the stats page's do: the hours overlapping the last
`span` before `now`, the current (partial) hour included. Cost is the exact sum of what each
request was priced at when it was recorded (pooler.pricing); `unpriced_requests` counts the
requests with tokens but no price (a model the catalog does not list), left out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from pooler.store.common import Conn
from pooler.store.pools import get_pool
from pooler.store.rollups import DAY, HOUR, Figures, hour_of, read_groupings

MAX_SPAN: Final = timedelta(days=400)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One group's figures: a day ("2026-12-06"), a key or an account."""

    name: str
    requests: int
    errors: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    unpriced_requests: int
    id: str | None = None  # the account's id, or the key's prefix


@dataclass(slots=True)
class UsageReport:
    pool: str
    since: datetime
    until: datetime
    total: UsageLine
    days: list[UsageLine] = field(default_factory=list)
    keys: list[UsageLine] = field(default_factory=list)
    accounts: list[UsageLine] = field(default_factory=list)


def usage_report(conn: Conn, pool_name: str, span: timedelta, now: datetime) -> UsageReport:
    """The usage of the Pool named `pool_name` (NotFoundError if none) over `span`."""
    pool = get_pool(conn, pool_name)
    since, until = hour_of(now - span), hour_of(now) + HOUR
    read = read_groupings(conn, ("all", "time", "key", "account"), since, until, [pool.id], DAY)
    totals = next(iter(read["all"].values()), Figures())
    report = UsageReport(pool.name, since, until, line("total", totals))
    report.days = [
        line(f"{day:%Y-%m-%d}", figures) for day, figures in sorted(read["time"].items(), key=_at)
    ]
    key_names = _key_names(conn, pool.id)
    report.keys = _busiest(
        line(key_names.get(key[1]) or _prefix(key[1]), figures, key[1])
        for key, figures in read["key"].items()
        if isinstance(key, tuple)
    )
    labels = _labels(conn, [a for a in read["account"] if isinstance(a, UUID)])
    report.accounts = _busiest(
        line(_account(account, labels), figures, str(account) if account else None)
        for account, figures in read["account"].items()
    )
    return report


def line(name: str, f: Figures, ident: str | None = None) -> UsageLine:
    return UsageLine(
        name,
        f.requests,
        f.errors,
        f.input_tokens,
        f.cached_input_tokens,
        f.output_tokens,
        f.reasoning_tokens,
        Decimal(f.cost_usd),
        f.unpriced_requests,
        ident,
    )


def _at(item: tuple[Any, Figures]) -> Any:
    return item[0]


def _busiest(lines: Any) -> list[UsageLine]:
    return sorted(lines, key=lambda x: (-x.cost_usd, -x.requests, x.name))


def _key_names(conn: Conn, pool_id: UUID) -> dict[str, str]:
    found = conn.execute(
        "SELECT DISTINCT ON (key_prefix) key_prefix, name FROM pool_api_keys"
        " WHERE pool_id = %s ORDER BY key_prefix, created_at DESC",
        (pool_id,),
    )
    return {prefix: f"{name} ({prefix}…)" if name else f"{prefix}…" for prefix, name in found}


def _labels(conn: Conn, ids: list[UUID]) -> dict[UUID, str]:
    if not ids:
        return {}
    rows = conn.execute("SELECT id, label FROM upstream_accounts WHERE id = ANY(%s)", (ids,))
    return {row[0]: row[1] for row in rows}


def _prefix(prefix: object) -> str:
    return f"{prefix}…" if prefix else "(no key)"


def _account(account_id: object, labels: dict[UUID, str]) -> str:
    if account_id is None:
        return "(no account: refused before one was chosen)"
    if isinstance(account_id, UUID) and account_id in labels:
        return labels[account_id]
    return f"(deleted account {str(account_id)[:8]})"
