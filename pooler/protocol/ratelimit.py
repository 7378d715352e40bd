"""Quota evidence from the Codex backend (protocol §5), parsed into frozen values (pure).

Three sources: the `x-<family>-*` headers of a response, the `codex.rate_limits` stream
event, and the body of a 429 `usage_limit_reached` error. The default family `codex`
fills `primary` / `secondary` / `credits`; any other family (`x-codex-bengalfox-*`) goes
to `extra` under its id (`codex_bengalfox`). Nothing here raises on bad input: a value
that does not parse is ignored, as the Codex CLI ignores it. Times are epoch seconds;
`now` is passed in so that relative resets stay testable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_FAMILY",
    "Credits",
    "HeaderMemo",
    "RateLimitSnapshot",
    "ReportedWindow",
    "credits_from_json",
    "normalize_family",
    "number_or_none",
    "parse_rate_limit_headers",
    "parse_rate_limits_event",
    "parse_usage_limit_error",
    "text_or_none",
]

DEFAULT_FAMILY = "codex"
_SUFFIXES = (b"-primary-used-percent", b"-secondary-used-percent")
_TRUE = (b"true", b"1")
_FALSE = (b"false", b"0")


@dataclass(frozen=True, slots=True)
class ReportedWindow:
    """One quota window as the upstream reported it (headers, an event, the usage API)."""

    used_percent: float
    window_minutes: int | None
    reset_at: float | None  # epoch seconds


@dataclass(frozen=True, slots=True)
class Credits:
    has_credits: bool
    unlimited: bool
    balance: str | None


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    primary: ReportedWindow | None
    secondary: ReportedWindow | None
    credits: Credits | None
    extra: dict[str, tuple[ReportedWindow | None, ReportedWindow | None]]  # family id -> windows
    plan_type: str | None
    active_limit: str | None  # the family a 429 refers to (`x-codex-active-limit`)
    limit_names: dict[str, str] = field(default_factory=dict)  # family id -> display name


def parse_rate_limit_headers(
    headers: Iterable[tuple[bytes, bytes]], now: float
) -> RateLimitSnapshot | None:
    """The snapshot in a response's headers; None when no window or credits parse."""
    return _parse_headers(headers, now)[0]


class HeaderMemo:
    """`parse_rate_limit_headers` for one account's answers, which repeat the same quota
    headers until its usage moves: a block whose quota headers are those of the block
    parsed last is not parsed again (a compare instead of the parse, on every answer).
    Headers the parse never reads may differ (`x-request-id` does on every answer). Only
    a reading that does not depend on `now` is kept: one whose resets are all given as
    `-reset-at` (a reset given only as `-reset-after-seconds` is relative to the moment
    it is read)."""

    __slots__ = ("_evidence", "_headers", "parses")

    def __init__(self) -> None:
        self._headers: tuple[tuple[bytes, bytes], ...] | None = None
        self._evidence: RateLimitSnapshot | None = None
        self.parses = 0  # how many blocks were parsed (not taken from the memo)

    def parse(
        self, headers: tuple[tuple[bytes, bytes], ...], now: float
    ) -> RateLimitSnapshot | None:
        last = self._headers
        if last is not None and _same_quota(last, headers):
            self._headers = headers
            return self._evidence
        self.parses += 1
        evidence, relative = _parse_headers(headers, now)
        self._headers = None if relative else headers
        self._evidence = evidence
        return evidence


# Every header name the parse reads holds one of these (lowercased): `-primary-*`,
# `-secondary-*`, `-limit-name`, `-active-limit`, `-credits-*`.
_READ_MARKS = (b"ary-", b"-limit", b"-credits-")


def _same_quota(old: tuple[tuple[bytes, bytes], ...], new: tuple[tuple[bytes, bytes], ...]) -> bool:
    """The two blocks read the same: header for header, equal, or of the same name and a
    name the parse never reads."""
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a != b:
            if a[0] != b[0]:
                return False
            name = a[0].lower()
            if any(mark in name for mark in _READ_MARKS):
                return False
    return True


def _parse_headers(
    headers: Iterable[tuple[bytes, bytes]], now: float
) -> tuple[RateLimitSnapshot | None, bool]:
    """The snapshot, and whether it depends on `now` (a reset read from `-reset-after-*`)."""
    x: dict[bytes, bytes] = {}
    for name, value in headers:
        if name[:2].lower() == b"x-":
            x.setdefault(name.lower(), value)
    windows: dict[str, tuple[ReportedWindow | None, ReportedWindow | None]] = {}
    names: dict[str, str] = {}
    relative = False
    for prefix in _families(x):
        family = _family_id(prefix)
        if family is None or family in windows:
            continue
        primary, rel_p = _header_window(x, prefix + b"-primary", now)
        secondary, rel_s = _header_window(x, prefix + b"-secondary", now)
        relative = relative or rel_p or rel_s
        pair = (primary, secondary)
        if pair != (None, None):
            windows[family] = pair
            label = _text(x.get(prefix + b"-limit-name"))
            if label is not None:
                names[family] = label
    credits = _header_credits(x)
    if not windows and credits is None:
        return None, relative
    primary, secondary = windows.pop(DEFAULT_FAMILY, (None, None))
    names.pop(DEFAULT_FAMILY, None)
    active = _text(x.get(b"x-codex-active-limit"))
    return RateLimitSnapshot(primary, secondary, credits, windows, None, active, names), relative


def parse_rate_limits_event(event: Mapping[str, Any], now: float) -> RateLimitSnapshot | None:
    """The snapshot in a `{"type":"codex.rate_limits",...}` event; None if it holds none."""
    if not isinstance(event, Mapping) or event.get("type") != "codex.rate_limits":
        return None
    limits = event.get("rate_limits")
    if not isinstance(limits, Mapping):
        limits = {}
    primary = _event_window(limits.get("primary"), now)
    secondary = _event_window(limits.get("secondary"), now)
    credits = credits_from_json(event.get("credits"))
    if primary is None and secondary is None and credits is None:
        return None
    plan_type = text_or_none(event.get("plan_type"))
    metered = text_or_none(event.get("metered_limit_name"))
    label = text_or_none(event.get("limit_name"))
    family = normalize_family(metered or label or DEFAULT_FAMILY) or DEFAULT_FAMILY
    if family == DEFAULT_FAMILY:
        return RateLimitSnapshot(primary, secondary, credits, {}, plan_type, None)
    names = {family: label} if metered and label else {}
    extra = {family: (primary, secondary)} if (primary or secondary) else {}
    return RateLimitSnapshot(None, None, credits, extra, plan_type, None, names)


def merge_snapshots(
    old: RateLimitSnapshot | None, new: RateLimitSnapshot | None
) -> RateLimitSnapshot | None:
    """Two snapshots of one moment as one (a stream sends a `codex.rate_limits` event per
    family): what `new` says wins, what only `old` says is kept."""
    if old is None or new is None:
        return new or old
    return RateLimitSnapshot(
        new.primary or old.primary,
        new.secondary or old.secondary,
        new.credits or old.credits,
        {**old.extra, **new.extra},
        new.plan_type or old.plan_type,
        new.active_limit or old.active_limit,
        {**old.limit_names, **new.limit_names},
    )


def parse_usage_limit_error(body: Mapping[str, Any], now: float) -> float | None:
    """When a 429 `usage_limit_reached` body says the quota resets (epoch seconds)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return None
    if "usage_limit_reached" not in (error.get("type"), error.get("code")):
        return None
    resets_at = number_or_none(error.get("resets_at"))
    if resets_at is not None and resets_at > 0:
        return resets_at
    resets_in = number_or_none(error.get("resets_in_seconds"))
    if resets_in is not None:
        return now + max(0.0, resets_in)
    return None


def _families(x: dict[bytes, bytes]) -> list[bytes]:
    """Header prefixes (`x-codex`, `x-codex-bengalfox`) that report a used percent."""
    found = []
    for name in x:
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix) + 2:
                found.append(name[: -len(suffix)])
    return found


def _family_id(prefix: bytes) -> str | None:
    try:
        return normalize_family(prefix[2:].decode("ascii"))
    except UnicodeDecodeError:
        return None


def normalize_family(name: str) -> str | None:
    return name.strip().lower().replace("-", "_") or None


def _header_window(
    x: dict[bytes, bytes], stem: bytes, now: float
) -> tuple[ReportedWindow | None, bool]:
    """The window, and whether its reset was read relative to `now`."""
    used = number_or_none(x.get(stem + b"-used-percent"))
    if used is None:
        return None, False
    minutes = _whole(x.get(stem + b"-window-minutes"))
    reset_at = number_or_none(x.get(stem + b"-reset-at"))
    relative = False
    if reset_at is None:
        after = number_or_none(x.get(stem + b"-reset-after-seconds"))
        relative = after is not None
        reset_at = None if after is None else now + after
    if used == 0 and not minutes and reset_at is None:
        return None, False  # §5: a window is present only if it says something
    return ReportedWindow(used, minutes, reset_at), relative


def _header_credits(x: dict[bytes, bytes]) -> Credits | None:
    has_credits = _flag(x.get(b"x-codex-credits-has-credits"))
    unlimited = _flag(x.get(b"x-codex-credits-unlimited"))
    if has_credits is None or unlimited is None:
        return None
    return Credits(has_credits, unlimited, _text(x.get(b"x-codex-credits-balance")))


def _event_window(raw: object, now: float) -> ReportedWindow | None:
    if not isinstance(raw, Mapping):
        return None
    used = number_or_none(raw.get("used_percent"))
    if used is None:
        return None
    minutes = _whole(raw.get("window_minutes"))
    if minutes is None:
        seconds = _whole(raw.get("limit_window_seconds"))
        minutes = None if seconds is None else seconds // 60
    reset_at = number_or_none(raw.get("reset_at"))
    if reset_at is None:
        after = number_or_none(raw.get("reset_after_seconds"))
        reset_at = None if after is None else now + after
    return ReportedWindow(used, minutes, reset_at)


def credits_from_json(raw: object) -> Credits | None:
    if not isinstance(raw, Mapping):
        return None
    has_credits, unlimited = raw.get("has_credits"), raw.get("unlimited")
    if not isinstance(has_credits, bool) or not isinstance(unlimited, bool):
        return None
    balance = raw.get("balance")
    if isinstance(balance, int | float) and not isinstance(balance, bool):
        balance = str(balance)
    return Credits(has_credits, unlimited, text_or_none(balance))


def number_or_none(value: object) -> float | None:
    """A finite float from a number, or from text/bytes that spell one; else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _whole(value: object) -> int | None:
    """A non-negative integer (`300`, `"300"`, `300.0`); else None."""
    number = number_or_none(value)
    if number is None or number < 0 or number != int(number):
        return None
    return int(number)


def _flag(value: bytes | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii").strip() or None
    except UnicodeDecodeError:
        return None


def text_or_none(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
