"""The overview's numbers, from what the console already knows: the stored facts of each
Pool and its accounts (`upstream_view.AccountRow`), each account's live snapshot and the
router's verdict (`upstream_view.Live`, `routing.verdict`), the request log's recent
activity (`store.overview.PoolActivity`) and this node's open websocket sessions. Pure.

Every number is formatted here once, under a key (`<pool id>:<name>`): the page renders
the same text the live stream later pushes when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from pooler.admin_ui.upstream_view import AccountRow, Live, QuotaBar
from pooler.routing.eligibility import (
    ACTOR_DOWN,
    CIRCUIT_OPEN,
    NOT_ACTIVE,
    QUOTA_EXHAUSTED,
    QUOTA_MODEL_EXHAUSTED,
    QUOTA_WEEKLY_EXHAUSTED,
    RATE_LIMITED,
    USAGE_LIMIT_REACHED,
)
from pooler.routing.pool_usage import current_percent
from pooler.routing.snapshot import WindowState
from pooler.routing.verdict import Reason, usable_now, when
from pooler.store.models import Pool
from pooler.store.overview import ACTIVITY_WINDOW, PoolActivity

WINDOW_MINUTES: Final = ACTIVITY_WINDOW.total_seconds() / 60
WINDOW_KINDS: Final = (("primary", "short window"), ("secondary", "weekly window"))
# What needs the operator, most urgent first: an account that cannot sign in, a crashed
# actor, a failing upstream, exhausted quota, then what an operator chose (a pause).
REAUTH, PAUSED, DISABLED = "reauth_required", "paused", "disabled"
RANKS: Final = {
    REAUTH: 0,
    ACTOR_DOWN: 1,
    CIRCUIT_OPEN: 2,
    USAGE_LIMIT_REACHED: 3,
    QUOTA_EXHAUSTED: 3,
    QUOTA_WEEKLY_EXHAUSTED: 3,
    RATE_LIMITED: 4,
    QUOTA_MODEL_EXHAUSTED: 5,
    PAUSED: 6,
    DISABLED: 6,
}
NONE: Final = "\u2013"  # an en dash: nothing to show


@dataclass(frozen=True, slots=True)
class WindowCapacity:
    """What is left of one quota window across the Pool's usable accounts: the sum of each
    one's room below the Pool's threshold (in accounts' worth: 1.0 is one whole account's
    window), and the earliest reset among them."""

    key: str
    name: str
    left: float
    usable: int
    reset_at: float | None
    unsampled: int  # usable accounts with no evidence for the window yet (counted as full)


@dataclass(frozen=True, slots=True)
class Attention:
    account_id: UUID
    label: str
    pool_name: str
    rank: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PoolFigures:
    pool: Pool
    accounts: int
    usable: int | None  # None: the supervisor did not answer
    activity: PoolActivity
    in_flight: int
    sessions: int
    windows: tuple[WindowCapacity, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.pool.status == "active"

    def key(self, name: str) -> str:
        return f"{self.pool.id}:{name}"

    def values(self) -> dict[str, str]:
        a = self.activity
        share = a.cached_tokens / a.input_tokens if a.input_tokens else None
        out = {
            self.key("usable"): f"{_count(self.usable)} / {self.accounts}",
            self.key("rpm"): _rate(a.requests),
            self.key("epm"): _rate(a.errors),
            self.key("latency"): _latency(a.added_p50_ms, a.added_p95_ms),
            self.key("cached"): NONE if share is None else f"{share * 100:.0f} %",
            self.key("in_flight"): str(self.in_flight),
            self.key("sessions"): str(self.sessions),
        }
        for w in self.windows:
            out[self.key(f"{w.key}:name")] = w.name[:1].upper() + w.name[1:]
            out[self.key(f"{w.key}:left")] = f"{w.left:.2f} of {w.usable}"
            reset = "no reset known" if w.reset_at is None else f"earliest reset {when(w.reset_at)}"
            sample = f"; {w.unsampled} without a sample yet" if w.unsampled else ""
            out[self.key(f"{w.key}:reset")] = reset + sample
        return out

    def meters(self) -> dict[str, tuple[float, float]]:
        return {
            self.key(f"{w.key}:meter"): (round(w.left, 3), float(w.usable)) for w in self.windows
        }


@dataclass(frozen=True, slots=True)
class Overview:
    pools: tuple[PoolFigures, ...]
    attention: tuple[Attention, ...]
    live: bool = True  # False: the supervisor did not answer (usable, capacity unknown)

    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for pool in self.pools:
            out.update(pool.values())
        return out

    def meters(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for pool in self.pools:
            out.update(pool.meters())
        return out

    def layout(self) -> str:
        """What the page's structure depends on: when it changes, the page needs a reload."""
        return "|".join(
            f"{p.pool.id}/{p.pool.status}/" + ",".join(w.key for w in p.windows) for p in self.pools
        )

    def attention_rows(self) -> list[list[str]]:
        """The attention list as the live stream sends it: [label, link, Pool, why]."""
        return [
            [a.label, f"/admin/upstreams/{a.account_id}", a.pool_name, "; ".join(a.reasons)]
            for a in self.attention
        ]


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _rate(count: int) -> str:
    per_minute = count / WINDOW_MINUTES
    return f"{per_minute:.1f}" if per_minute < 100 else f"{per_minute:.0f}"


def _latency(p50: float | None, p95: float | None) -> str:
    if p50 is None or p95 is None:
        return "no sample"
    return f"{_ms(p50)} / {_ms(p95)}"


def _ms(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def attention_of(lifecycle: str, reasons: Sequence[Reason]) -> tuple[int, tuple[str, ...]] | None:
    """The rank and words of an account's reasons that need the operator, or None."""
    ranked: list[tuple[int, str]] = []
    for reason in reasons:
        kind = lifecycle if reason.code == NOT_ACTIVE else reason.code
        rank = RANKS.get(kind)
        if rank is not None:
            ranked.append((rank, reason.text))
    if not ranked:
        return None
    ranked.sort(key=lambda pair: pair[0])
    return ranked[0][0], tuple(text for _, text in ranked)


def window_capacity(
    key: str,
    name: str,
    windows: Sequence[WindowState | None],
    threshold: float,
    now: float,
) -> WindowCapacity:
    """One window's capacity from the usable accounts' windows (None: no evidence yet)."""
    left = sum(max(0.0, threshold - current_percent(w, now)) for w in windows) / 100.0
    resets = [w.reset_at for w in windows if w is not None and w.reset_at and w.reset_at > now]
    unsampled = sum(1 for w in windows if w is None)
    return WindowCapacity(key, name, left, len(windows), min(resets) if resets else None, unsampled)


def _span_name(kind: str, bars: Sequence[QuotaBar], fallback: str) -> str:
    """`5h window`: the stored window's length when an account reported it."""
    for bar in bars:
        if bar.family == "codex" and bar.window == kind and bar.window_minutes:
            return bar.name
    return fallback


def pool_figures(
    pool: Pool,
    members: Sequence[AccountRow],
    live: Mapping[UUID, Live],
    activity: PoolActivity,
    sessions: int,
    now: float,
) -> tuple[PoolFigures, list[Attention]]:
    """A Pool's figures and its accounts that need attention, from its members (accounts
    with an active assignment to it)."""
    threshold = float(pool.quota_threshold_percent)
    usable: list[AccountRow] = []
    attention: list[Attention] = []
    in_flight = 0
    available = True
    for account in members:
        state = live.get(account.id)
        if state is None or not state.available:
            available = False
            continue
        if state.snapshot is not None:
            in_flight += state.snapshot.in_flight
        reasons = dict(state.verdicts).get(pool.name)
        if reasons is None:
            continue
        if usable_now(reasons):
            usable.append(account)
        lifecycle = state.snapshot.lifecycle if state.snapshot else account.lifecycle
        found = attention_of(lifecycle, reasons)
        if found is not None and pool.status == "active":
            rank, words = found
            attention.append(Attention(account.id, account.label, pool.name, rank, words))
    windows: list[WindowCapacity] = []
    if available and pool.status == "active":
        snapshots = [live[a.id].snapshot for a in usable]
        bars = [bar for a in usable for bar in a.quota]
        for kind, fallback in WINDOW_KINDS:
            states = [getattr(s, kind) if s is not None else None for s in snapshots]
            name = _span_name(kind, bars, fallback)
            windows.append(window_capacity(kind, name, states, threshold, now))
    figures = PoolFigures(
        pool,
        accounts=len(members),
        usable=len(usable) if available else None,
        activity=activity,
        in_flight=in_flight,
        sessions=sessions,
        windows=tuple(windows),
    )
    return figures, attention


def members_of(pool: Pool, accounts: Sequence[AccountRow]) -> list[AccountRow]:
    """The Pool's members: the accounts with an active assignment to it."""
    return [
        a
        for a in accounts
        if any(link.pool_id == pool.id and link.status == "active" for link in a.pools)
    ]


def overview(
    pools: Sequence[Pool],
    accounts: Sequence[AccountRow],
    live: Mapping[UUID, Live],
    activity: Mapping[UUID, PoolActivity],
    sessions: Mapping[str, int],
    now: float,
) -> Overview:
    """Every Pool's figures (by name) and the attention list (most urgent first)."""
    figures: list[PoolFigures] = []
    attention: list[Attention] = []
    for pool in sorted(pools, key=lambda p: p.name):
        found, needs = pool_figures(
            pool,
            members_of(pool, accounts),
            live,
            activity.get(pool.id, PoolActivity()),
            sessions.get(str(pool.id), 0),
            now,
        )
        figures.append(found)
        attention.extend(needs)
    attention.sort(key=lambda a: (a.rank, a.pool_name, a.label))
    live_ok = all(state.available for state in live.values())
    return Overview(tuple(figures), tuple(attention), live_ok)


class LastSent:
    """What one live stream has pushed so far: `changes` answers what to push next (None:
    nothing changed) and remembers it as pushed."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.meters: dict[str, tuple[float, float]] = {}
        self.attention: list[list[str]] | None = None
        self.layout: str | None = None

    def changes(self, now: Overview) -> dict[str, object] | None:
        out: dict[str, object] = {}
        values = {k: v for k, v in now.values().items() if self.values.get(k) != v}
        meters = {k: v for k, v in now.meters().items() if self.meters.get(k) != v}
        attention, layout = now.attention_rows(), now.layout()
        if values:
            out["values"] = values
            self.values.update(values)
        if meters:
            out["meters"] = meters
            self.meters.update(meters)
        if attention != self.attention:
            out["attention"] = self.attention = attention
        if layout != self.layout:
            out["layout"] = self.layout = layout
        return out or None
