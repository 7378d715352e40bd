"""The overview's pure numbers: capacity left per quota window, the attention ranks and
words (the verdict's), the formatted figures, and what a live stream pushes next."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from pooler.admin_ui.overview_figures import (
    LastSent,
    attention_of,
    overview,
    window_capacity,
)
from pooler.admin_ui.upstream_view import AccountRow, Live, PoolLink
from pooler.routing.snapshot import AccountSnapshot, CircuitView, WindowState
from pooler.routing.verdict import PauseInfo, why_not_serving
from pooler.store.models import Pool
from pooler.store.overview import PoolActivity

NOW = 1_800_000_000.0


def pool(name: str = "demo", threshold: str = "100") -> Pool:
    moment = datetime.now(UTC)
    return Pool(
        id=uuid4(),
        name=name,
        strategy="least_used",
        status="active",
        quota_threshold_percent=float(Decimal(threshold)),
        retry_budget=3,
        max_in_flight_per_account=32,
        created_at=moment,
        updated_at=moment,
    )


def account(label: str, the_pool: Pool, lifecycle: str = "active") -> AccountRow:
    row = AccountRow(
        id=uuid4(),
        label=label,
        email=None,
        plan_type="pro",
        lifecycle=lifecycle,
        lifecycle_reason=None,
        access_token_expires_at=None,
        last_refresh_at=None,
        created_at=datetime.now(UTC),
    )
    row.pools.append(PoolLink(the_pool.id, the_pool.name, "active", 1))
    return row


def live(row: AccountRow, the_pool: Pool, snapshot: AccountSnapshot) -> Live:
    threshold = float(the_pool.quota_threshold_percent)
    reasons = why_not_serving(snapshot, NOW, threshold=threshold, pause=PauseInfo("ops"))
    return Live(snapshot, [(the_pool.name, reasons)])


def test_capacity_is_the_room_below_the_threshold_summed_with_the_earliest_reset() -> None:
    windows = [
        WindowState(40.0, NOW + 600),
        WindowState(95.0, NOW + 300),
        WindowState(70.0, NOW - 5),  # reset since: a whole window again
        None,  # no sample yet: counted as full
    ]
    found = window_capacity("primary", "5h window", windows, 90.0, NOW)
    assert found.left == (50 + 0 + 90 + 90) / 100
    assert (found.usable, found.reset_at, found.unsampled) == (4, NOW + 300, 1)


def test_attention_ranks_reauth_first_and_keeps_the_verdicts_words() -> None:
    snapshot = AccountSnapshot(
        "a",
        "a",
        lifecycle="paused",
        circuits={"responses": CircuitView(open_until=NOW + 60)},
    )
    reasons = why_not_serving(snapshot, NOW, pause=PauseInfo("ops@x.org"))
    rank, words = attention_of("paused", reasons) or (None, ())
    assert rank == 2  # the open circuit is more urgent than the pause
    assert words[0].startswith("circuit open for responses") and "paused by ops@x.org" in words[1]
    reauth = why_not_serving(AccountSnapshot("b", "b", lifecycle="reauth_required"), NOW)
    assert attention_of("reauth_required", reauth) == (0, (reauth[0].text,))
    busy = AccountSnapshot("c", "c", in_flight=2, max_in_flight=2)  # at capacity: not a problem
    assert attention_of("active", why_not_serving(busy, NOW)) is None


def test_a_pools_figures_and_what_a_stream_pushes_next() -> None:
    the_pool = pool(threshold="80")
    ok = account("ok", the_pool)
    out = account("out", the_pool)
    gone = account("gone", the_pool, "reauth_required")
    snapshots = {
        ok.id: AccountSnapshot(str(ok.id), "ok", in_flight=2, primary=WindowState(30.0, NOW + 60)),
        out.id: AccountSnapshot(str(out.id), "out", primary=WindowState(85.0, NOW + 120)),
        gone.id: AccountSnapshot(str(gone.id), "gone", lifecycle="reauth_required"),
    }
    state = {row.id: live(row, the_pool, snapshots[row.id]) for row in (ok, out, gone)}
    activity = {the_pool.id: PoolActivity(30, 3, 1000, 400, 1.25, 12.0)}
    now = overview([the_pool], [ok, out, gone], state, activity, {str(the_pool.id): 1}, NOW)
    assert len(now.pools) == 1
    values = now.values()
    key = f"{the_pool.id}:"
    assert values[key + "usable"] == "1 / 3"
    assert (values[key + "rpm"], values[key + "epm"]) == ("6.0", "0.6")
    assert values[key + "latency"] == "1.2 ms / 12 ms"
    assert values[key + "cached"] == "40 %"
    assert (values[key + "in_flight"], values[key + "sessions"]) == ("2", "1")
    assert values[key + "primary:left"] == "0.50 of 1"  # 80 - 30, the one usable account
    assert [a.label for a in now.attention] == ["gone", "out"]

    sent = LastSent()
    first = sent.changes(now)
    assert first is not None and set(first) == {"values", "meters", "attention", "layout"}
    assert sent.changes(now) is None  # nothing changed: nothing to push
    quieter = overview([the_pool], [ok, out, gone], state, {}, {}, NOW)
    assert sent.changes(quieter) == {
        "values": {
            key + "rpm": "0.0",
            key + "epm": "0.0",
            key + "latency": "no sample",
            key + "cached": "\u2013",
            key + "sessions": "0",
        }
    }
