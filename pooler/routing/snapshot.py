"""What the PoolSupervisor knows about each account: a snapshot the AccountActor publishes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache

LIFECYCLE_ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class WindowState:
    """One quota window as last observed. Times are epoch seconds."""

    used_percent: float
    reset_at: float | None
    observed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ScopedLimit:
    """An extra limit family (e.g. one model's own quota): it applies only to requests for
    a model matching `scope`, the normalized limit name (or family id)."""

    family: str
    scope: str
    primary: WindowState | None = None
    secondary: WindowState | None = None


@dataclass(frozen=True, slots=True)
class CircuitView:
    """A route class's circuit as routing sees it: closed unless `open_until` is in the
    future, or `probing` says every half-open probe slot is taken."""

    open_until: float = 0.0
    probing: bool = False


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Everything routing needs about one account, as of its last state change."""

    account_id: str
    label: str
    lifecycle: str = LIFECYCLE_ACTIVE
    plan_type: str | None = None
    in_flight: int = 0
    max_in_flight: int = 32
    primary: WindowState | None = None
    secondary: WindowState | None = None
    scoped: tuple[ScopedLimit, ...] = ()
    has_credits: bool = False  # credits or unlimited: exhausted windows are credit-backed
    blocked_until: float | None = None  # an upstream usage_limit_reached answer
    cooling_until: float | None = None  # an upstream 429 with Retry-After: excluded until
    demoted_until: float | None = None  # a recent failure: to the back of the order until
    circuits: Mapping[str, CircuitView] = field(default_factory=dict)  # route class -> view
    alive: bool = True
    # The model slugs (normalize_scope'd) the account's upstream catalog lists; None: not
    # known yet, every model allowed.
    models: frozenset[str] | None = None

    @property
    def max_used_percent(self) -> float:
        used = 0.0
        for window in (self.primary, self.secondary):
            if window is not None and window.used_percent > used:
                used = window.used_percent
        return used


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(AccountSnapshot))
_set_field = object.__setattr__


def updated(snapshot: AccountSnapshot, changes: Mapping[str, object]) -> AccountSnapshot:
    """`dataclasses.replace(snapshot, **changes)` at a third of its cost: an account copies
    its snapshot twice per request (lease, release). The fields are copied as they are (a
    snapshot has no `__post_init__` to run); a name that is not a field raises
    AttributeError (the class has slots), as `replace` raises TypeError."""
    new = object.__new__(AccountSnapshot)
    for name in _SNAPSHOT_FIELDS:
        _set_field(new, name, getattr(snapshot, name))
    for name, value in changes.items():
        _set_field(new, name, value)
    return new


@lru_cache(maxsize=1024)
def normalize_scope(name: str) -> str:
    """`GPT-5.3-Codex Spark`, `gpt_5.3_codex_spark` and `gpt-5.3-codex-spark` match."""
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == ".")
