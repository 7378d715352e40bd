"""`/admin/stats`: requests, error rate, tokens by kind, cached-token share, p50/p95 latency,
top error codes and API-equivalent cost (what the traffic would have cost at OpenAI's API
list prices: what the subscription seats saved), per Pool, per account and per key, over
1 h / 24 h / 7 d / 30 d (`?window=24h&pool=<id>`, shareable). Read only from the hourly rollups
(`pooler.store.rollups`), never from raw logs; an admin sees only its Pools' rows (an
account's figures count only its traffic in those Pools).

A window covers whole UTC hours: the hours that overlap the last 1 h / 24 h / 7 d / 30 d,
the current (partial) hour included. Charts are server-drawn SVG (`svg_chart`), each with
its numbers in a table beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from markupsafe import Markup
from quart import Blueprint, request
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler.admin_ui import svg_chart
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, pool_or_404, render
from pooler.admin_ui.svg_chart import Series
from pooler.store.common import Conn
from pooler.store.rollups import GROUPINGS, HOUR, Figures, hour_of, read_groupings

PATH: Final = "/admin/stats"
DAY: Final = timedelta(days=1)
TABLE_ROWS: Final = 50  # accounts / keys listed, busiest first
NO_VALUE: Final = "\N{EN DASH}"  # no request had the figure


@dataclass(frozen=True, slots=True)
class Window:
    key: str
    label: str
    span: timedelta
    step: timedelta  # one chart bucket
    tick: str  # strftime of a bucket's label on the chart
    row: str  # ... and in the table beside it


WINDOWS: Final = {
    w.key: w
    for w in (
        Window("1h", "1 h", HOUR, HOUR, "%H:00", "%m-%d %H:00"),
        Window("24h", "24 h", DAY, HOUR, "%H:00", "%m-%d %H:00"),
        Window("7d", "7 d", 7 * DAY, DAY, "%m-%d", "%Y-%m-%d"),
        Window("30d", "30 d", 30 * DAY, DAY, "%m-%d", "%Y-%m-%d"),
    )
}
DEFAULT_WINDOW: Final = "24h"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a per-Pool / per-account / per-key table."""

    name: str
    detail: str  # the key's Pool, or ""
    figures: Figures


@dataclass(slots=True)
class StatsView:
    window: Window
    since: datetime
    until: datetime
    totals: Figures = field(default_factory=Figures)
    buckets: list[tuple[datetime, Figures]] = field(default_factory=list)
    pools: list[Row] = field(default_factory=list)
    accounts: list[Row] = field(default_factory=list)
    keys: list[Row] = field(default_factory=list)
    more_accounts: int = 0
    more_keys: int = 0


def window_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): the whole hours overlapping the last `window.span` before `now`."""
    return hour_of(now - window.span), hour_of(now) + HOUR


def bucket_starts(window: Window, since: datetime, until: datetime) -> list[datetime]:
    """The chart's buckets: `window.step` apart, aligned like the SQL's date_bin (UTC)."""
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    first = origin + ((since - origin) // window.step) * window.step
    starts = []
    while first < until:
        starts.append(first)
        first += window.step
    return starts


def load_view(conn: Conn, window: Window, scope: list[UUID] | None, now: datetime) -> StatsView:
    since, until = window_bounds(window, now)
    view = StatsView(window, since, until)
    read = read_groupings(conn, GROUPINGS, since, until, scope, window.step)
    if not read["all"]:
        return view
    (view.totals,) = read["all"].values()
    by_time = read["time"]
    view.buckets = [(t, by_time.get(t) or Figures()) for t in bucket_starts(window, since, until)]
    by_pool, by_account, by_key = read["pool"], read["account"], read["key"]
    pool_names = _names(conn, "SELECT id, name FROM pools WHERE id = ANY(%s)", by_pool)
    view.pools = _rows(by_pool, lambda pool_id: (pool_names.get(pool_id, "(deleted Pool)"), ""))
    labels = _names(conn, "SELECT id, label FROM upstream_accounts WHERE id = ANY(%s)", by_account)
    view.accounts = _rows(by_account, lambda a: (_account_name(a, labels), ""))
    key_names = _key_names(conn, [k for k in by_key if isinstance(k, tuple)])
    view.keys = _rows(
        by_key,
        lambda k: (key_names.get(k) or _prefix_name(k[1]), pool_names.get(k[0], "(deleted Pool)")),
    )
    view.more_accounts = max(len(view.accounts) - TABLE_ROWS, 0)
    view.more_keys = max(len(view.keys) - TABLE_ROWS, 0)
    view.accounts, view.keys = view.accounts[:TABLE_ROWS], view.keys[:TABLE_ROWS]
    return view


def _rows(found: dict[object, Figures], name_of: Callable[[Any], tuple[str, str]]) -> list[Row]:
    rows = []
    for group, figures in found.items():
        name, detail = name_of(group)
        rows.append(Row(name, detail, figures))
    return sorted(rows, key=lambda row: (-row.figures.requests, row.name, row.detail))


def _names(conn: Conn, sql: str, groups: Iterable[object]) -> dict[Any, str]:
    ids = [g for g in groups if isinstance(g, UUID)]
    return {row[0]: row[1] for row in conn.execute(sql, (ids,))} if ids else {}


def _key_names(conn: Conn, keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], str]:
    pools = sorted({k[0] for k in keys})
    if not pools:
        return {}
    found = conn.execute(
        "SELECT DISTINCT ON (pool_id, key_prefix) pool_id, key_prefix, name FROM pool_api_keys"
        " WHERE pool_id = ANY(%s) ORDER BY pool_id, key_prefix, created_at DESC",
        (pools,),
    )
    return {
        (pool_id, prefix): f"{name} ({prefix}…)" if name else f"{prefix}…"
        for pool_id, prefix, name in found
    }


def _account_name(account_id: object, labels: dict[Any, str]) -> str:
    if account_id is None:
        return "(no account: refused before one was chosen)"
    return labels.get(account_id) or f"(deleted account {str(account_id)[:8]})"


def _prefix_name(prefix: object) -> str:
    return f"{prefix}…" if prefix else "(no key)"


# --- charts ------------------------------------------------------------------------------


def bucket_label(view: StatsView, start: datetime) -> str:
    return start.strftime(view.window.tick)


def charts(view: StatsView) -> dict[str, Markup]:
    labels = [bucket_label(view, t) for t, _ in view.buckets]
    figs = [f for _, f in view.buckets]
    requests = [
        Series("Succeeded", [f.requests - f.errors for f in figs], "s0"),
        Series("Errors", [f.errors for f in figs], "s3"),
    ]
    tokens = [
        Series(
            "Input, not cached",
            [max(f.input_tokens - f.cached_input_tokens, 0) for f in figs],
            "s1",
        ),
        Series("Cached input", [f.cached_input_tokens for f in figs], "s2"),
        Series("Output", [f.output_tokens for f in figs], "s0"),
    ]
    latency = [  # p50 drawn last: on top where the two meet
        Series("p95", [f.p95_ms for f in figs], "s3"),
        Series("p50", [f.p50_ms for f in figs], "s0"),
    ]
    span = view.window.label
    return {
        "requests": svg_chart.bar_chart(
            "chart-requests", f"Requests and errors, last {span}", labels, requests
        ),
        "requests_legend": svg_chart.legend(requests),
        "tokens": svg_chart.bar_chart(
            "chart-tokens", f"Tokens by kind, last {span}", labels, tokens
        ),
        "tokens_legend": svg_chart.legend(tokens),
        "latency": svg_chart.line_chart(
            "chart-latency",
            f"Latency p50 and p95, last {span}",
            labels,
            latency,
            svg_chart.duration,
        ),
        "latency_legend": svg_chart.legend(latency),
    }


def percent(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value * 100:.1f} %"


def latency(value: float | None) -> str:
    return NO_VALUE if value is None else svg_chart.duration(value)


def count(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def money(value: Decimal) -> str:
    """US dollars: cents, or four decimals below a cent (a few requests' worth)."""
    if value and value < Decimal("0.01"):
        return f"${value:.4f}"
    return f"${value:,.2f}".replace(",", " ")


FORMATS: Final = {"percent": percent, "latency": latency, "count": count, "money": money}


# --- the page ----------------------------------------------------------------------------


def stats_blueprint() -> Blueprint:
    bp = Blueprint("stats_page", __name__)

    @bp.get(PATH)
    @operator_required()
    async def show(found: SignedIn) -> Response:
        visible = await db(lambda conn: _visible_pools(conn, found.pool_ids))
        window_key = request.args.get("window", DEFAULT_WINDOW)
        pool_arg = request.args.get("pool", "")
        errors = {}
        window = WINDOWS.get(window_key)
        if window is None:
            errors["window"] = "Choose a window of 1 h, 24 h, 7 d or 30 d."
        pool_id = None
        if pool_arg:
            try:
                pool_id = UUID(pool_arg)
            except ValueError:
                errors["pool"] = "Choose a Pool from the list."
        if pool_id is not None:
            pool_or_404(found, pool_id)
            if pool_id not in {visible_id for visible_id, _ in visible}:
                raise NotFound("no such Pool")
        context: dict[str, Any] = {
            "windows": list(WINDOWS.values()),
            "pools": visible,
            "pool_filter": pool_arg if "pool" not in errors else "",
            "window_key": window_key if window is not None else DEFAULT_WINDOW,
            "errors": errors,
            **FORMATS,
        }
        if errors or window is None:
            return await render("stats.html", 400, view=None, charts={}, **context)
        scope = [pool_id] if pool_id is not None else _scope(found)
        now = datetime.now(UTC)
        view = await db(lambda conn: load_view(conn, window, scope, now))
        return await render("stats.html", view=view, charts=charts(view), **context)

    return bp


def _scope(found: SignedIn) -> list[UUID] | None:
    return None if found.pool_ids is None else sorted(found.pool_ids)


def _visible_pools(conn: Conn, pool_ids: frozenset[UUID] | None) -> list[tuple[UUID, str]]:
    scope = None if pool_ids is None else list(pool_ids)
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT id, name FROM pools WHERE %(s)s::uuid[] IS NULL OR id = ANY(%(s)s::uuid[])"
            " ORDER BY name",
            {"s": scope},
        )
    ]
