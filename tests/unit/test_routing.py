"""Routing is pure: eligibility, quota evidence, circuits, strategies, continuity, choice.
Property-tested."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from pooler.protocol.ratelimit import Credits, RateLimitSnapshot, ReportedWindow
from pooler.routing.choose import (
    PIN_KEPT,
    PIN_MOVED,
    Pin,
    PoolPolicy,
    PoolRouter,
    choose_accounts,
)
from pooler.routing.circuit import CLOSED, HALF_OPEN, OPEN, Circuit, CircuitSettings
from pooler.routing.continuity import ContinuityMap
from pooler.routing.eligibility import (
    AT_CAPACITY,
    CIRCUIT_OPEN,
    CIRCUIT_PROBE_IN_FLIGHT,
    NOT_ACTIVE,
    QUOTA_EXHAUSTED,
    QUOTA_MODEL_EXHAUSTED,
    QUOTA_WEEKLY_EXHAUSTED,
    RATE_LIMITED,
    USAGE_LIMIT_REACHED,
    exclusion,
)
from pooler.routing.evidence import apply_evidence
from pooler.routing.snapshot import AccountSnapshot, CircuitView, ScopedLimit, WindowState
from pooler.routing.strategies import ChoiceHistory, order_candidates

NOW = 1_800_000_000.0
STRATEGY_NAMES = ["least_used", "round_robin", "fill_first", "weighted"]

windows = st.none() | st.builds(
    WindowState,
    used_percent=st.floats(0, 120),
    reset_at=st.none() | st.floats(NOW - 3600, NOW + 3600),
    observed_at=st.none() | st.floats(NOW - 3600, NOW),
)
snapshots = st.builds(
    AccountSnapshot,
    account_id=st.text("abcdef", min_size=1, max_size=4),
    label=st.just("x"),
    lifecycle=st.sampled_from(["active", "active", "paused", "reauth_required"]),
    in_flight=st.integers(0, 40),
    max_in_flight=st.integers(1, 40),
    primary=windows,
    secondary=windows,
    has_credits=st.booleans(),
    blocked_until=st.none() | st.floats(NOW - 100, NOW + 100),
    cooling_until=st.none() | st.floats(NOW - 100, NOW + 100),
    demoted_until=st.none() | st.floats(NOW - 100, NOW + 100),
    circuits=st.dictionaries(
        st.just("responses"),
        st.builds(CircuitView, st.floats(NOW - 100, NOW + 100), st.booleans()),
        max_size=1,
    ),
)
pools = st.lists(snapshots, max_size=12, unique_by=lambda s: s.account_id).map(
    lambda accounts: [replace(a, label=a.account_id) for a in accounts]
)


def account(name: str, **changes: object) -> AccountSnapshot:
    return AccountSnapshot(account_id=name, label=name, **changes)  # type: ignore[arg-type]


# --- eligibility ---------------------------------------------------------------------


@given(snapshots, st.floats(10, 100))
def test_an_eligible_account_passes_every_hard_check(
    snapshot: AccountSnapshot, threshold: float
) -> None:
    if exclusion(snapshot, threshold, NOW) is not None:
        return
    assert snapshot.alive and snapshot.lifecycle == "active"
    assert snapshot.in_flight < snapshot.max_in_flight
    assert snapshot.blocked_until is None or snapshot.blocked_until <= NOW
    assert snapshot.cooling_until is None or snapshot.cooling_until <= NOW
    view = snapshot.circuits.get("responses")
    assert view is None or (view.open_until <= NOW and not view.probing)
    for window in (snapshot.primary, snapshot.secondary):
        if window is None or window.used_percent < threshold:
            continue
        reset_passed = window.reset_at is not None and window.reset_at <= NOW
        credit_backed = snapshot.has_credits and threshold >= 100
        stale = window.reset_at is None and (window.observed_at or NOW) + 900 <= NOW
        assert reset_passed or credit_backed or stale


def test_exclusion_codes() -> None:
    assert exclusion(account("a", lifecycle="paused"), 100, NOW) == NOT_ACTIVE
    assert exclusion(account("a", in_flight=2, max_in_flight=2), 100, NOW) == AT_CAPACITY
    assert exclusion(account("a", cooling_until=NOW + 5), 100, NOW) == RATE_LIMITED
    assert exclusion(account("a", blocked_until=NOW + 5), 100, NOW) == USAGE_LIMIT_REACHED
    full = account("a", primary=WindowState(100.0, NOW + 60))
    assert exclusion(full, 100, NOW) == QUOTA_EXHAUSTED
    assert exclusion(full, 100, NOW + 61) is None  # the window has reset since
    weekly = account("a", secondary=WindowState(95.0, NOW + 60))
    assert exclusion(weekly, 90, NOW) == QUOTA_WEEKLY_EXHAUSTED
    # Credits carry an account past an exhausted window, not past the operator's threshold.
    assert exclusion(replace(full, has_credits=True), 100, NOW) is None
    assert exclusion(replace(weekly, has_credits=True), 90, NOW) == QUOTA_WEEKLY_EXHAUSTED
    # Evidence without a reset time blocks until it is stale, then the account may probe.
    unknown = account("a", primary=WindowState(100.0, None, observed_at=NOW - 60))
    assert exclusion(unknown, 100, NOW) == QUOTA_EXHAUSTED
    assert exclusion(unknown, 100, NOW + 900) is None
    # A new account with no evidence is routable.
    assert exclusion(account("new"), 100, NOW) is None
    opened = account("a", circuits={"responses": CircuitView(open_until=NOW + 30)})
    assert exclusion(opened, 100, NOW) == CIRCUIT_OPEN
    assert exclusion(opened, 100, NOW, route_class="compact") is None
    assert exclusion(opened, 100, NOW + 31) is None
    probing = account("a", circuits={"responses": CircuitView(probing=True)})
    assert exclusion(probing, 100, NOW) == CIRCUIT_PROBE_IN_FLIGHT


def test_model_scoped_limits_apply_only_to_their_model() -> None:
    spark = ScopedLimit("codex_bengalfox", "gpt5.3codexspark", WindowState(100.0, NOW + 600))
    snapshot = account("a", scoped=(spark,))
    assert exclusion(snapshot, 100, NOW, model_scope="gpt5.3codexspark") == QUOTA_MODEL_EXHAUSTED
    assert exclusion(snapshot, 100, NOW, model_scope="gpt5.5") is None
    choice = choose_accounts(
        PoolPolicy("p"), [snapshot, account("b")], now=NOW, model="GPT-5.3-Codex-Spark"
    )
    assert [c.account_id for c in choice.candidates] == ["b"]
    assert choice.exclusions == {"a": QUOTA_MODEL_EXHAUSTED}


def test_evidence_from_every_family_folds_into_the_snapshot() -> None:
    evidence = RateLimitSnapshot(
        primary=ReportedWindow(42.0, 300, NOW + 100),
        secondary=None,
        credits=Credits(True, False, "5"),
        extra={"codex_bengalfox": (ReportedWindow(100.0, 300, NOW + 50), None)},
        plan_type="pro",
        active_limit=None,
        limit_names={"codex_bengalfox": "GPT-5.3-Codex-Spark"},
    )
    snapshot = apply_evidence(account("a"), evidence, NOW)
    assert snapshot.primary == WindowState(42.0, NOW + 100, NOW)
    assert snapshot.plan_type == "pro" and snapshot.has_credits
    assert snapshot.scoped[0].scope == "gpt5.3codexspark"
    # Older evidence (another node's, arriving late) never overwrites newer.
    older = replace(evidence, primary=ReportedWindow(99.0, 300, NOW + 100))
    assert apply_evidence(snapshot, older, NOW - 10).primary == snapshot.primary
    # A weekly window reported in the primary slot is the secondary one.
    weekly = replace(evidence, primary=ReportedWindow(10.0, 10_080, NOW + 9999), extra={})
    assert apply_evidence(account("b"), weekly, NOW).secondary is not None


# --- circuits ------------------------------------------------------------------------


def test_circuit_opens_after_the_threshold_and_a_probe_closes_it() -> None:
    rules = CircuitSettings(failure_threshold=3, open_seconds=60, half_open_probes=1)
    circuit = Circuit()
    for _ in range(2):
        assert circuit.admit(NOW, rules) is False
        assert circuit.failed(False, NOW, rules) is None
    assert circuit.failed(False, NOW, rules) == "closed->open"
    assert circuit.state == OPEN and circuit.admit(NOW + 59, rules) is None
    assert circuit.admit(NOW + 60, rules) is True  # the probe
    assert circuit.state == HALF_OPEN and circuit.admit(NOW + 60, rules) is None
    circuit.neutral(True)  # the probe's client went away: the slot frees, nothing decided
    assert circuit.state == HALF_OPEN and circuit.admit(NOW + 61, rules) is True
    assert circuit.failed(True, NOW + 62, rules) == "half_open->open"
    assert circuit.admit(NOW + 63, rules) is None
    assert circuit.admit(NOW + 122, rules) is True
    assert circuit.succeeded(True) == "half_open->closed"
    assert circuit.state == CLOSED and circuit.admit(NOW + 123, rules) is False


@given(st.lists(st.sampled_from(["ok", "fail", "neutral", "tick"]), max_size=60))
def test_circuit_never_admits_more_probes_than_allowed(events: list[str]) -> None:
    rules = CircuitSettings(failure_threshold=2, open_seconds=10, half_open_probes=2)
    circuit = Circuit()
    now = NOW
    probes: list[bool] = []
    for event in events:
        if event == "tick":
            now += 6
            admitted = circuit.admit(now, rules)
            if admitted is not None:
                probes.append(admitted)
        elif probes:
            probe = probes.pop(0)
            if event == "ok":
                circuit.succeeded(probe)
            elif event == "fail":
                circuit.failed(probe, now, rules)
            else:
                circuit.neutral(probe)
        assert circuit.probes <= rules.half_open_probes
        if circuit.state == OPEN:
            assert circuit.admit(circuit.open_until - 0.001, rules) is None


# --- strategies and the router -------------------------------------------------------


@given(pools, st.sampled_from(STRATEGY_NAMES), st.floats(10, 100))
def test_a_blocked_account_is_never_chosen(
    accounts: list[AccountSnapshot], strategy: str, threshold: float
) -> None:
    choice = choose_accounts(PoolPolicy("p", strategy, threshold), accounts, now=NOW)
    eligible = {a.account_id for a in accounts if exclusion(a, threshold, NOW) is None}
    assert {c.account_id for c in choice.candidates} == eligible
    assert len(choice.candidates) == len(eligible)
    excluded = {a.label for a in accounts if a.account_id not in eligible}
    # Skipped accounts are always explained; every account when nothing can serve.
    assert set(choice.exclusions) <= excluded
    if not eligible:
        assert set(choice.exclusions) == excluded
    if accounts and not eligible and choice.all_quota_exhausted:
        assert choice.earliest_reset is not None and choice.earliest_reset > NOW


@given(pools)
def test_fill_first_never_picks_a_less_used_account_while_a_fuller_one_is_eligible(
    accounts: list[AccountSnapshot],
) -> None:
    accounts = [replace(a, demoted_until=None) for a in accounts]
    choice = choose_accounts(PoolPolicy("p", "fill_first"), accounts, now=NOW)
    if choice.candidates:
        first = choice.candidates[0]
        fullest = max(round(c.max_used_percent, 1) for c in choice.candidates)
        assert round(first.max_used_percent, 1) == fullest


def test_demoted_accounts_go_to_the_back_without_leaving() -> None:
    accounts = [account("a", demoted_until=NOW + 30), account("b"), account("c")]
    choice = choose_accounts(PoolPolicy("p", "round_robin"), accounts, now=NOW)
    assert [c.account_id for c in choice.candidates] == ["b", "c", "a"]
    later = choose_accounts(PoolPolicy("p", "round_robin"), accounts, now=NOW + 31)
    assert later.candidates[0].account_id == "a"


def test_least_used_prefers_remaining_quota_then_takes_turns() -> None:
    history = ChoiceHistory()
    busy = account("a", primary=WindowState(50.0, NOW + 60))
    fresh = [account("b"), account("c")]
    order = order_candidates("least_used", [busy, *fresh], history, {})
    assert order[-1].account_id == "a"
    router = PoolRouter(PoolPolicy("p"), ["b", "c"], {a.account_id: a for a in fresh}.get, NOW)
    picks = [router.choose(NOW, limit=1).candidates[0].account_id for _ in range(4)]
    assert picks == ["b", "c", "b", "c"]


@settings(max_examples=30)
@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 5), min_size=1))
def test_weighted_serves_in_proportion_to_weights(weights: dict[str, int]) -> None:
    accounts = {name: account(name) for name in weights}
    router = PoolRouter(
        PoolPolicy("p", "weighted", weights=weights), list(weights), accounts.get, NOW
    )
    rounds = 12 * sum(weights.values())
    served = Counter(router.choose(NOW, limit=1).candidates[0].account_id for _ in range(rounds))
    for name, weight in weights.items():
        expected = rounds * weight / sum(weights.values())
        assert abs(served[name] - expected) <= 1


@settings(max_examples=60)
@given(
    pools,
    st.sampled_from(STRATEGY_NAMES),
    st.lists(st.tuples(st.integers(0, 11), snapshots, st.floats(0, 200)), max_size=20),
)
def test_the_router_kept_up_to_date_agrees_with_a_fresh_choice(
    accounts: list[AccountSnapshot],
    strategy: str,
    changes: list[tuple[int, AccountSnapshot, float]],
) -> None:
    """Touching accounts as they change, and letting time wake blocked ones, gives the same
    eligible set as choosing from scratch."""
    current = {a.account_id: a for a in accounts}
    router = PoolRouter(PoolPolicy("p", strategy), list(current), current.get, NOW)
    now = NOW
    for index, changed, step in changes:
        now += step
        if accounts:
            name = accounts[index % len(accounts)].account_id
            current[name] = replace(changed, account_id=name, label=name)
            router.touch(name, now)
        fresh = choose_accounts(PoolPolicy("p", strategy), list(current.values()), now=now)
        kept = router.choose(now, limit=len(current) or 1)
        assert {c.account_id for c in kept.candidates} == {c.account_id for c in fresh.candidates}


# --- continuity ----------------------------------------------------------------------


def test_a_soft_pin_is_kept_while_eligible_and_moves_when_not() -> None:
    accounts = [account("a"), account("b"), account("c", primary=WindowState(40.0, None))]
    choice = choose_accounts(PoolPolicy("p"), accounts, now=NOW, pin=Pin("c"))
    assert choice.candidates[0].account_id == "c" and choice.pin_outcome == PIN_KEPT
    accounts[2] = account("c", lifecycle="paused")
    choice = choose_accounts(PoolPolicy("p"), accounts, now=NOW, pin=Pin("c"))
    assert choice.pin_outcome == PIN_MOVED and choice.candidates[0].account_id == "a"
    assert choice.exclusions["c"] == NOT_ACTIVE  # the log says why the cache was lost
    assert not choice.hard_pin_unavailable


def test_a_hard_pin_never_moves() -> None:
    accounts = [account("a"), account("b", lifecycle="paused")]
    choice = choose_accounts(PoolPolicy("p"), accounts, now=NOW, pin=Pin("b", hard=True))
    assert choice.candidates == [] and choice.hard_pin_unavailable
    assert choice.exclusions == {"b": NOT_ACTIVE}
    kept = choose_accounts(
        PoolPolicy("p"), [account("a"), account("b")], now=NOW, pin=Pin("b", hard=True)
    )
    assert [c.account_id for c in kept.candidates] == ["b", "a"]


def test_continuity_map_expires_and_restores_the_latest() -> None:
    cmap = ContinuityMap(ttl=60)
    cmap.pin(b"k", "c", NOW)
    assert cmap.get(b"k", NOW + 61) is None
    cmap.pin(b"k", "c", NOW)
    cmap.restore(b"k", "d", NOW + 30, NOW)  # an older use elsewhere: ignored
    assert cmap.get(b"k", NOW) == "c"
    cmap.restore(b"k", "d", NOW + 120, NOW)  # a later use on another node wins
    assert cmap.get(b"k", NOW) == "d"


@given(st.lists(st.tuples(st.binary(max_size=3), st.sampled_from("abc")), max_size=40))
def test_continuity_map_is_bounded_and_keeps_the_latest(pins: list[tuple[bytes, str]]) -> None:
    cmap = ContinuityMap(ttl=60, max_entries=5)
    for key, account_id in pins:
        cmap.pin(key, account_id, NOW)
    assert len(cmap) <= 5
    if pins:
        key, account_id = pins[-1]
        assert cmap.get(key, NOW) == account_id


def test_an_extended_demotion_wakes_at_its_new_end() -> None:
    current = {name: account(name) for name in "ab"}
    router = PoolRouter(PoolPolicy("p", "fill_first"), ["a", "b"], current.get, NOW)
    current["a"] = account("a", demoted_until=NOW + 10)
    router.touch("a", NOW)
    current["a"] = account("a", demoted_until=NOW + 20)  # failed again: the same sort key
    router.touch("a", NOW + 5)
    assert router.choose(NOW + 15, limit=2).candidates[0].account_id == "b"
    assert router.choose(NOW + 21, limit=2).candidates[0].account_id == "a"


def test_a_pin_is_news_when_new_moved_or_expired_not_when_used_again() -> None:
    cmap = ContinuityMap(ttl=60)
    assert cmap.pin(b"k", "a1", now=0.0) is True  # new
    assert cmap.pin(b"k", "a1", now=10.0) is False  # used again: only its expiry moves
    assert cmap.pin(b"k", "a2", now=20.0) is True  # moved
    assert cmap.pin(b"k", "a2", now=200.0) is True  # expired, then taken again
