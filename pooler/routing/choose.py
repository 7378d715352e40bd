"""Choosing accounts for one lease: eligibility, continuity, strategy. Pure (`now` passed in).

A `PoolRouter` keeps one Pool's members in its strategy's order, so that a choice reads
the first few entries instead of sorting every account (DESIGN §9: a choice among 1,000
accounts within 20 µs). The order holds only accounts that pass `account_block`; the
others wait in `blocked` with their code, and those whose block lifts by itself (a quota
reset, a Retry-After, a demotion ending) are woken by time. The owner calls `touch` when
an account's snapshot changes; the router re-reads it through `lookup`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pooler.routing.circuit import RESPONSES
from pooler.routing.eligibility import (
    DEFAULT_FRESHNESS_S,
    EXCLUDED,
    QUOTA_CODES,
    account_block,
    exclusion,
    request_block,
)
from pooler.routing.snapshot import AccountSnapshot, normalize_scope
from pooler.routing.strategies import STRATEGIES, ChoiceHistory, key_least_used

INDEX_BITS = 24  # up to 16 million accounts in one Pool
INDEX_MASK = (1 << INDEX_BITS) - 1

# Pin outcomes (request_logs.continuity).
PIN_NONE, PIN_NEW, PIN_KEPT, PIN_MOVED, PIN_DISABLED = "none", "new", "kept", "moved", "disabled"
# Why a pin moved when its account is no longer in the Pool (else: its exclusion code).
NOT_IN_POOL = "not_in_pool"


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    pool_id: str
    strategy: str = "least_used"
    quota_threshold_percent: float = 100.0
    retry_budget: int = 3
    weights: Mapping[str, int] = field(default_factory=dict)  # account id -> weight
    continuity: bool = True


@dataclass(frozen=True, slots=True)
class Pin:
    """The account a request's conversation is pinned to. A hard pin (a
    `previous_response_id`) cannot move: the upstream holds that response's state."""

    account_id: str
    hard: bool = False


@dataclass(slots=True)
class Choice:
    """Accounts to try in order, and why others were left out."""

    candidates: list[AccountSnapshot]
    exclusions: dict[str, str] = field(default_factory=dict)  # label -> code
    pin: Pin | None = None
    pin_outcome: str = PIN_NONE
    earliest_reset: float | None = None
    strategy: str = ""  # the Pool's strategy that ordered the candidates
    pin_reason: str | None = None  # why the pinned account was left out (a move)

    @property
    def pinned_account(self) -> str | None:
        return self.pin.account_id if self.pin_outcome == PIN_KEPT and self.pin else None

    @property
    def hard_pin_unavailable(self) -> bool:
        return self.pin is not None and self.pin.hard and self.pin_outcome == PIN_MOVED

    @property
    def all_quota_exhausted(self) -> bool:
        return (
            not self.candidates
            and bool(self.exclusions)
            and all(code in QUOTA_CODES for code in self.exclusions.values())
        )


Lookup = Callable[[str], AccountSnapshot | None]


class PoolRouter:
    def __init__(
        self,
        policy: PoolPolicy,
        members: Sequence[str],
        lookup: Lookup,
        now: float,
        *,
        freshness: float = DEFAULT_FRESHNESS_S,
        history: ChoiceHistory | None = None,
    ) -> None:
        self.policy = policy
        self.members = frozenset(members)
        # Entries are plain ints, (sort key << INDEX_BITS) | the account's index: a sorted
        # list of ints bisects faster than one of tuples, and ties break by index.
        self._ids: list[str] = list(dict.fromkeys(members))
        self._index = {account_id: i for i, account_id in enumerate(self._ids)}
        self.freshness = freshness
        self.history = history or ChoiceHistory()
        self._lookup = lookup
        self._order: list[int] = []  # entries, sorted
        self._keys: dict[str, int] = {}  # account id -> its entry in the order
        self._blocked: dict[str, tuple[str, float | None, str]] = {}  # code, until, label
        self._wakes: list[tuple[float, str]] = []
        self._wake_at: dict[str, float] = {}
        # Chosen since they were last placed: re-placed before the next choice, so that the
        # history change and the in-flight change its lease brings cost one move, not two.
        self._chosen: set[str] = set()
        self._key = STRATEGIES.get(policy.strategy, key_least_used)
        for account_id in members:
            self.touch(account_id, now)

    def __len__(self) -> int:
        return len(self.members)

    # --- keeping the order -------------------------------------------------------------

    def touch(self, account_id: str, now: float) -> None:
        """Re-read one account and put it where it now belongs."""
        if account_id not in self.members:
            return
        self._chosen.discard(account_id)
        snapshot = self._lookup(account_id)
        policy = self.policy
        block = (
            account_block(snapshot, policy.quota_threshold_percent, now, self.freshness)
            if snapshot is not None
            else None
        )
        old = self._keys.get(account_id)
        if snapshot is not None and block is None:
            demoted_until = snapshot.demoted_until
            demoted = demoted_until is not None and demoted_until > now
            key = self._key(snapshot, self.history, policy.weights, 1 if demoted else 0)
            entry = key << INDEX_BITS | self._index[account_id]
            if entry == old:  # still in its place (e.g. only its in-flight count moved)
                if demoted and self._wake_at.get(account_id) != demoted_until:
                    self._wake(account_id, demoted_until)  # type: ignore[arg-type]
                return
            if old is not None:
                del self._order[bisect_left(self._order, old)]
            else:
                self._blocked.pop(account_id, None)
            self._keys[account_id] = entry
            insort(self._order, entry)
            self._wake_at.pop(account_id, None)
            if demoted:
                self._wake(account_id, demoted_until)  # type: ignore[arg-type]
            return
        if old is not None:
            del self._keys[account_id]
            del self._order[bisect_left(self._order, old)]
        self._wake_at.pop(account_id, None)
        if snapshot is None or block is None:
            self._blocked.pop(account_id, None)
            return
        self._blocked[account_id] = (block[0], block[1], snapshot.label)
        if block[1] is not None:
            self._wake(account_id, block[1])

    def _wake(self, account_id: str, when: float) -> None:
        self._wake_at[account_id] = when
        heapq.heappush(self._wakes, (when, account_id))

    def _run_wakes(self, now: float) -> None:
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            when, account_id = heapq.heappop(wakes)
            if self._wake_at.get(account_id) == when:
                self.touch(account_id, now)

    # --- choosing ----------------------------------------------------------------------

    def choose(
        self,
        now: float,
        *,
        route_class: str = RESPONSES,
        model: str = "",
        pin: Pin | None = None,
        exclude: frozenset[str] = frozenset(),
        limit: int = 4,
    ) -> Choice:
        self._run_wakes(now)
        if self._chosen:
            for account_id in list(self._chosen):
                self.touch(account_id, now)
        policy = self.policy
        threshold = policy.quota_threshold_percent
        scope = normalize_scope(model) if model else ""
        choice = Choice(
            [],
            pin=pin,
            pin_outcome=PIN_NONE if pin is None else PIN_MOVED,
            strategy=policy.strategy,
        )
        exclusions = choice.exclusions
        candidates = choice.candidates
        if pin is not None:
            snapshot = self._lookup(pin.account_id) if pin.account_id in self.members else None
            if snapshot is not None:
                if pin.account_id in exclude:
                    code: str | None = EXCLUDED
                else:
                    code = exclusion(
                        snapshot,
                        threshold,
                        now,
                        route_class=route_class,
                        model_scope=scope,
                        freshness=self.freshness,
                    )
                if code is None:
                    candidates.append(snapshot)
                    choice.pin_outcome = PIN_KEPT
                else:
                    exclusions[snapshot.label] = code
                    choice.pin_reason = code
            else:
                choice.pin_reason = NOT_IN_POOL
            if pin.hard and choice.pin_outcome != PIN_KEPT:
                return choice  # a hard pin never moves
        ids = self._ids
        for entry in self._order:
            account_id = ids[entry & INDEX_MASK]
            if account_id in exclude or (pin is not None and account_id == pin.account_id):
                continue
            snapshot = self._lookup(account_id)
            if snapshot is None:
                continue
            block = request_block(snapshot, route_class, scope, threshold, now, self.freshness)
            if block is not None:
                exclusions[snapshot.label] = block[0]
                until = block[1]  # a model's own limit resets too (a 429 names the time)
                if block[0] in QUOTA_CODES and until is not None:
                    earliest = choice.earliest_reset
                    choice.earliest_reset = until if earliest is None else min(earliest, until)
                continue
            candidates.append(snapshot)
            if len(candidates) >= limit:
                break
        if not candidates:  # say why every account was left out (the request is refused)
            for account_id, (code, until, label) in self._blocked.items():
                if account_id in exclude:
                    continue
                exclusions.setdefault(label, code)
                earliest = choice.earliest_reset
                if (
                    code in QUOTA_CODES
                    and until is not None
                    and (earliest is None or until < earliest)
                ):
                    choice.earliest_reset = until
        if candidates:
            first = candidates[0].account_id
            self.history.record(first)
            self._chosen.add(first)
        return choice


def choose_accounts(
    policy: PoolPolicy,
    snapshots: Sequence[AccountSnapshot],
    *,
    now: float,
    pin: Pin | None = None,
    exclude: frozenset[str] = frozenset(),
    history: ChoiceHistory | None = None,
    route_class: str = RESPONSES,
    model: str = "",
    limit: int | None = None,
) -> Choice:
    """One choice over a list of snapshots (tests and one-off callers; the supervisor keeps
    a PoolRouter per Pool instead)."""
    by_id = {s.account_id: s for s in snapshots}
    router = PoolRouter(policy, list(by_id), by_id.get, now, history=history)
    return router.choose(
        now,
        route_class=route_class,
        model=model,
        pin=pin,
        exclude=exclude,
        limit=limit or max(1, len(by_id)),
    )
