"""An account's quota from `GET /backend-api/wham/usage` (protocol §1.6).

`parse_usage_payload` turns the `RateLimitStatusPayload` body into the same
`RateLimitSnapshot` the headers and stream events give (pure, never raises: a value that
does not parse is ignored). `fetch_usage` makes the call with sync httpx, for a worker
thread, and names its failures:

    UsageError
    ├── UsageUnauthorized     401: the access token is stale, refresh and try again
    └── UsageUnavailable      anything else (network, timeout, other status, bad JSON);
                              `code` says which, e.g. `http_503`, `timeout`, `invalid_json`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from pooler.protocol.ratelimit import (
    DEFAULT_FAMILY,
    RateLimitSnapshot,
    ReportedWindow,
    credits_from_json,
    normalize_family,
    number_or_none,
    text_or_none,
)

__all__ = [
    "USAGE_PATH",
    "UsageError",
    "UsageUnauthorized",
    "UsageUnavailable",
    "fetch_usage",
    "parse_usage_payload",
]

USAGE_PATH: Final = "/backend-api/wham/usage"
USAGE_TIMEOUT_S: Final = 10.0
USER_AGENT: Final = "codex-pooler"
WEEKLY_MINUTES: Final = 10080

Pair = tuple[ReportedWindow | None, ReportedWindow | None]


class UsageError(Exception):
    """The usage endpoint gave no snapshot."""


class UsageUnauthorized(UsageError):
    """401: the access token was refused."""

    def __init__(self) -> None:
        super().__init__("unauthorized")
        self.code = "unauthorized"


class UsageUnavailable(UsageError):
    """Any other failure; `code` is short and safe to log."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def fetch_usage(
    http: httpx.Client,
    base_url: str,
    access_token: str,
    chatgpt_account_id: str,
    *,
    now: float,
) -> RateLimitSnapshot | None:
    """Poll the account's usage; None when the body holds no window and no credits.

    Raises:
        UsageUnauthorized: the upstream answered 401.
        UsageUnavailable: network error, timeout, another non-200 status, or a body that
            is not a JSON object.
    """
    headers = {
        "Authorization": f"Bearer {access_token}",
        "ChatGPT-Account-Id": chatgpt_account_id,
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }
    try:
        response = http.get(usage_url(base_url), headers=headers, timeout=USAGE_TIMEOUT_S)
    except httpx.TimeoutException as exc:
        raise UsageUnavailable("timeout") from exc
    except httpx.HTTPError as exc:
        raise UsageUnavailable("network_error") from exc
    if response.status_code == 401:
        raise UsageUnauthorized()
    if response.status_code != 200:
        raise UsageUnavailable(f"http_{response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise UsageUnavailable("invalid_json") from exc
    if not isinstance(body, Mapping):
        raise UsageUnavailable("invalid_json")
    return parse_usage_payload(body, now)


def usage_url(base_url: str) -> str:
    """`{base}/backend-api/wham/usage`; a base that already ends in /backend-api keeps it."""
    base = base_url.rstrip("/")
    base = base.removesuffix("/backend-api")
    return base + USAGE_PATH


def parse_usage_payload(payload: Mapping[str, Any], now: float) -> RateLimitSnapshot | None:
    """The snapshot in a `/wham/usage` body; None when it holds no window and no credits."""
    if not isinstance(payload, Mapping):
        return None
    primary, secondary = _pair(payload.get("rate_limit"), now)
    extra, names = _additional(payload.get("additional_rate_limits"), now)
    default = extra.pop(DEFAULT_FAMILY, (None, None))
    names.pop(DEFAULT_FAMILY, None)
    if primary is None and secondary is None:
        primary, secondary = default
    credits = credits_from_json(payload.get("credits"))
    if primary is None and secondary is None and credits is None and not extra:
        return None
    plan_type = text_or_none(payload.get("plan_type"))
    return RateLimitSnapshot(primary, secondary, credits, extra, plan_type, None, names)


def _additional(raw: object, now: float) -> tuple[dict[str, Pair], dict[str, str]]:
    """Extra metered families: id (normalized metered_feature, else limit_name) -> windows."""
    extra: dict[str, Pair] = {}
    names: dict[str, str] = {}
    if not isinstance(raw, list):
        return extra, names
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        label = text_or_none(entry.get("limit_name"))
        feature = text_or_none(entry.get("metered_feature"))
        family = normalize_family(feature or label or "")
        if family is None or family in extra:
            continue
        pair = _pair(entry.get("rate_limit"), now)
        if pair == (None, None):
            continue
        extra[family] = pair
        if label is not None:
            names[family] = label
    return extra, names


def _pair(raw: object, now: float) -> Pair:
    """(primary, secondary) of a `rate_limit` object; a lone weekly window is secondary."""
    if not isinstance(raw, Mapping):
        return None, None
    primary = _window(_first(raw, "primary_window", "primary"), now)
    secondary = _window(_first(raw, "secondary_window", "secondary"), now)
    if secondary is None and primary is not None and primary.window_minutes == WEEKLY_MINUTES:
        return None, primary
    return primary, secondary


def _first(raw: Mapping[str, Any], *keys: str) -> object:
    for key in keys:
        value = raw.get(key)
        if value is not None:
            return value
    return None


def _window(raw: object, now: float) -> ReportedWindow | None:
    if not isinstance(raw, Mapping):
        return None
    used = number_or_none(raw.get("used_percent"))
    if used is None:
        return None
    seconds = number_or_none(raw.get("limit_window_seconds"))
    minutes = int(seconds) // 60 if seconds is not None and seconds >= 0 else None
    reset_at = number_or_none(raw.get("reset_at"))
    if reset_at is None or reset_at <= 0:
        after = number_or_none(raw.get("reset_after_seconds"))
        reset_at = None if after is None else now + max(0.0, after)
    return ReportedWindow(used, minutes, reset_at)
