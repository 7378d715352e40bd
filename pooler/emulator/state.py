"""All the emulator's state, in memory, with every decision as a plain method. No I/O.

Every method that depends on the time takes `now` (epoch seconds); the ASGI app passes
`time.time()`. Methods never await, so under Trio nothing interleaves inside one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from pooler.emulator import rejections as rj
from pooler.emulator.accounts import FakeAccount, make_account
from pooler.emulator.faults import (
    DEFAULT_STALL_SECONDS,
    REFRESH_FAULTS,
    RESPONSE_FAULTS,
    Fault,
    FaultPlan,
)
from pooler.emulator.models import MODEL_SLUGS, model_not_found
from pooler.emulator.prompt_cache import CacheRules
from pooler.emulator.signin import SignInDesk
from pooler.emulator.tokens import TokenSet, mint_token_set
from pooler.emulator.usage import (
    PRIMARY_MINUTES,
    SECONDARY_MINUTES,
    EmulatedWindow,
    LimitFamily,
    WindowView,
    additional_rate_limit,
    family_headers,
    rate_limit_headers,
    rate_limits_event,
    usage_payload,
    view,
)

REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True)
class Grant:
    """An access token as issued: whose, until when, and whether a refresh minted it."""

    account: FakeAccount
    expires_at: float
    fresh: bool


@dataclass(frozen=True)
class TurnLog:
    """What the request log adds for a `/responses` request: a digest and counts, never
    content. `session_hash` is a short hash of the session header (inbound.session_tag)."""

    body_sha256: str | None = None
    session_hash: str | None = None
    input_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass
class _RefreshRecord:
    account: FakeAccount
    spent: bool = False


class EmulatorState:
    def __init__(
        self,
        accounts: int = 3,
        token_ttl: float = 3600.0,
        percent_per_request: float = 2.0,
        seed: str = "emulator",
        *,
        now: float | None = None,
        cache_rules: CacheRules | None = None,
    ) -> None:
        if accounts < 1:
            raise ValueError("the emulator needs at least one account")
        start = time.time() if now is None else now
        self.token_ttl = token_ttl
        self.percent_per_request = percent_per_request
        self.seed = seed
        self.started_at = start
        self.accounts = [
            make_account(seed, i, start, token_ttl, cache_rules) for i in range(1, accounts + 1)
        ]
        self.faults = FaultPlan()
        self.sign_ins = SignInDesk()
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._grants: dict[str, Grant] = {}
        self._refresh: dict[str, _RefreshRecord] = {}
        self._by_key: dict[str, FakeAccount] = {}
        for account in self.accounts:
            self._by_key[account.account_id] = account
            self._by_key[account.label] = account
            self._issue(account, account.tokens, fresh=False)

    # -- lookup ------------------------------------------------------------------------

    def find_account(self, key: str) -> FakeAccount | None:
        """By `chatgpt_account_id` or label."""
        return self._by_key.get(key)

    # -- tokens ------------------------------------------------------------------------

    def _issue(self, account: FakeAccount, tokens: TokenSet, *, fresh: bool) -> None:
        account.tokens = tokens
        self._grants[tokens.access_token] = Grant(account, tokens.expires_at, fresh)
        self._refresh[tokens.refresh_token] = _RefreshRecord(account)

    def authenticate(
        self, authorization: str | None, account_header: str | None, now: float
    ) -> Grant | rj.Rejection:
        """Check `Authorization: Bearer <access token>` and `chatgpt-account-id`."""
        scheme, _, token = (authorization or "").partition(" ")
        grant = self._grants.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            return rj.unauthorized("invalid_token", "Could not validate your credentials.")
        if grant.expires_at <= now:
            return rj.unauthorized(
                "token_expired", "Provided authentication token is expired. Please sign in again."
            )
        if account_header != grant.account.account_id:
            return rj.unauthorized(
                "account_mismatch", "The chatgpt-account-id header does not match the token."
            )
        return grant

    def refresh_owner(self, refresh_token: str) -> FakeAccount | None:
        record = self._refresh.get(refresh_token)
        return record.account if record is not None else None

    def refresh(self, refresh_token: str, now: float) -> TokenSet | rj.Rejection:
        """Rotate a single-use refresh token; the old access token stays valid until exp."""
        record = self._refresh.get(refresh_token)
        if record is None:
            return rj.unauthorized(
                "refresh_token_invalidated", "Your refresh token has been invalidated."
            )
        if record.spent or self.faults.take(record.account.account_id, REFRESH_FAULTS) is not None:
            return rj.unauthorized(
                "refresh_token_reused", "Your refresh token has already been used."
            )
        record.spent = True
        tokens = mint_token_set(record.account.identity, now, self.token_ttl)
        self._issue(record.account, tokens, fresh=True)
        self._grants = {t: g for t, g in self._grants.items() if g.expires_at > now}
        return tokens

    def issue_sign_in(self, account: FakeAccount, now: float) -> TokenSet:
        """A completed sign-in: a new token set for the account, usable and refreshable like
        the ones it started with (which stay valid too)."""
        tokens = mint_token_set(account.identity, now, self.token_ttl)
        self._issue(account, tokens, fresh=True)
        return tokens

    # -- quota -------------------------------------------------------------------------

    def windows(self, account: FakeAccount, now: float) -> tuple[WindowView, WindowView]:
        return view(account.primary, now), view(account.secondary, now)

    def rate_limit_headers(
        self, account: FakeAccount, now: float, *, quiet: bool = False
    ) -> rj.Headers:
        """Every family's quota headers; none when the account or the request is quiet."""
        if quiet or account.reporting.quiet_headers:
            return []
        headers = rate_limit_headers(*self.windows(account, now))
        for family in account.families.values():
            headers += family_headers(
                family, view(family.primary, now), view(family.secondary, now)
            )
        return headers

    def rate_limits_event(self, account: FakeAccount, now: float) -> dict[str, Any]:
        return rate_limits_event(account.plan_type, *self.windows(account, now))

    def rate_limits_events(self, account: FakeAccount, now: float) -> list[dict[str, Any]]:
        """One `codex.rate_limits` event per family, the default one first."""
        events = [self.rate_limits_event(account, now)]
        for f in account.families.values():
            windows = view(f.primary, now), view(f.secondary, now)
            events.append(rate_limits_event(account.plan_type, *windows, family=f))
        return events

    def usage_payload(self, account: FakeAccount, now: float) -> dict[str, Any]:
        extra = {"user_id": account.user_id, "account_id": account.account_id}
        additional = [
            additional_rate_limit(f, view(f.primary, now), view(f.secondary, now))
            for f in account.families.values()
        ]
        return usage_payload(
            account.plan_type,
            *self.windows(account, now),
            {"email": account.email, **extra},
            additional,
        )

    def quota_rejection(
        self, account: FakeAccount, now: float, model: str = "", *, quiet: bool = False
    ) -> rj.Rejection | None:
        """429 usage_limit_reached while a window that `model` counts against is full (an
        extra family's for its model, the default ones otherwise), until its reset."""
        family = account.family_for(model)
        full = [w for w in account.windows_for(model) if w.exhausted(now)]
        if not full:
            return None
        resets_at = max(w.reset_at(now) for w in full)
        headers = self.rate_limit_headers(account, now, quiet=quiet)
        if family is not None and headers:
            headers.append((b"x-codex-active-limit", family.family.encode()))
        return rj.usage_limit_reached(account.plan_type, resets_at, now, headers)

    def charge(self, account: FakeAccount, now: float, model: str = "") -> None:
        """One completed response: primary moves by `percent_per_request`, secondary by 1/10
        (an extra family's windows for its model, the default ones otherwise)."""
        primary, secondary = account.windows_for(model)
        primary.add(self.percent_per_request, now)
        secondary.add(self.percent_per_request / 10, now)

    def set_usage(
        self, account: FakeAccount, primary: float | None, secondary: float | None, now: float
    ) -> None:
        _set_windows(account.primary, account.secondary, primary, secondary, now)

    def set_family_usage(
        self,
        account: FakeAccount,
        family_id: str,
        limit_name: str | None,
        primary: float | None,
        secondary: float | None,
        now: float,
    ) -> LimitFamily:
        """Create or change an extra limit family; a new one needs its limit name.
        Raises ValueError for a bad family id or a missing name."""
        if (
            not family_id
            or family_id == "codex"
            or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in family_id)
        ):
            raise ValueError("family must be an id like codex_bengalfox (not codex)")
        family = account.families.get(family_id)
        if family is None:
            if not limit_name:
                raise ValueError("limit_name is required for a new family")
            family = LimitFamily(
                family_id,
                limit_name,
                EmulatedWindow(origin=self.started_at, minutes=PRIMARY_MINUTES),
                EmulatedWindow(origin=self.started_at, minutes=SECONDARY_MINUTES),
            )
            account.families[family_id] = family
        elif limit_name:
            family.limit_name = limit_name
        _set_windows(family.primary, family.secondary, primary, secondary, now)
        return family

    # -- faults ------------------------------------------------------------------------

    def arm_fault(
        self,
        key: str,
        kind: str,
        times: int = 1,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        *,
        resets_in: float | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Raises ValueError for an unknown account or kind, or a bad option."""
        account = self.find_account(key)
        if account is None:
            raise ValueError(f"unknown account {key!r}")
        return self.faults.arm(
            account.account_id,
            kind,
            times,
            stall_seconds,
            resets_in=resets_in,
            retry_after=retry_after,
        )

    def take_fault(self, account: FakeAccount, kinds: frozenset[str]) -> Fault | None:
        return self.faults.take(account.account_id, kinds)

    def admit_response(
        self, account: FakeAccount, now: float, model: str = "", *, quiet: bool = False
    ) -> tuple[rj.Rejection | None, Fault | None]:
        """Before answering a turn: a model the account lacks, an armed fault, then a full
        quota window."""
        served = MODEL_SLUGS if account.models is None else account.models
        if model and model not in served:
            status, code, message = model_not_found(model)
            return rj.rejection(status, code, message, param="model"), None
        fault = self.faults.take(account.account_id, RESPONSE_FAULTS)
        if fault is not None:
            return self.fault_rejection(fault, account, now, quiet=quiet), fault
        return self.quota_rejection(account, now, model, quiet=quiet), None

    def fault_rejection(
        self, fault: Fault, account: FakeAccount, now: float, *, quiet: bool = False
    ) -> rj.Rejection | None:
        """The error answer of an HTTP-status fault; None for stall/disconnect."""
        if fault.kind == "usage_limit_429":
            primary, secondary = self.windows(account, now)
            resets_at = primary.reset_at
            if fault.resets_in is not None:
                resets_at = math.ceil(now + fault.resets_in)
            full = WindowView(100.0, primary.minutes, resets_at, max(0, int(resets_at - now)))
            loud = not (quiet or account.reporting.quiet_headers)
            headers = rate_limit_headers(full, secondary) if loud else []
            return rj.usage_limit_reached(account.plan_type, resets_at, now, headers)
        if fault.kind == "rate_limit_429":
            return rj.rate_limit_exceeded(1 if fault.retry_after is None else fault.retry_after)
        if fault.kind == "server_error_500":
            return rj.server_error()
        if fault.kind == "unauthorized_401":
            return rj.unauthorized("token_expired", "Provided authentication token is expired.")
        return None

    # -- request log and control ---------------------------------------------------------

    def record(
        self,
        method: str,
        path: str,
        *,
        transport: str = "http",
        grant: Grant | None = None,
        account: FakeAccount | None = None,
        status: int | None,
        fault: str | None = None,
        turn: TurnLog | None = None,
        now: float,
    ) -> None:
        """Metadata only: never a body, a prompt or a token (a body's digest at most)."""
        who = grant.account if grant is not None else account
        entry: dict[str, Any] = {
            "time": now,
            "method": method,
            "path": path,
            "transport": transport,
            "account_id": who.account_id if who is not None else None,
            "status": status,
            "token_fresh": grant.fresh if grant is not None else False,
            "fault": fault,
        }
        if turn is not None:
            entry.update(asdict(turn))
        self.requests.append(entry)

    def reset(self) -> None:
        """Clear faults, usage (extra families too), prompt caches, reporting settings,
        pending sign-ins and the request log; tokens stay valid."""
        self.faults.clear()
        self.sign_ins.clear()
        self.requests.clear()
        for account in self.accounts:
            account.clear_usage()

    def accounts_view(self, now: float) -> list[dict[str, Any]]:
        return [_account_view(a, now) for a in self.accounts]


def _set_windows(
    primary: EmulatedWindow,
    secondary: EmulatedWindow,
    primary_percent: float | None,
    secondary_percent: float | None,
    now: float,
) -> None:
    for window, value in ((primary, primary_percent), (secondary, secondary_percent)):
        if value is not None:
            window.roll(now)
            window.used_percent = max(0.0, min(100.0, float(value)))


def _account_view(a: FakeAccount, now: float) -> dict[str, Any]:
    primary, secondary = view(a.primary, now), view(a.secondary, now)
    return {
        "label": a.label,
        "account_id": a.account_id,
        "email": a.email,
        "plan_type": a.plan_type,
        "models": None if a.models is None else list(a.models),
        "primary_used_percent": primary.used_percent,
        "secondary_used_percent": secondary.used_percent,
        "primary_reset_at": primary.reset_at,
        "secondary_reset_at": secondary.reset_at,
        "families": [
            {
                "family": f.family,
                "limit_name": f.limit_name,
                "primary_used_percent": view(f.primary, now).used_percent,
                "secondary_used_percent": view(f.secondary, now).used_percent,
                "primary_reset_at": view(f.primary, now).reset_at,
            }
            for f in a.families.values()
        ],
        "quiet_headers": a.reporting.quiet_headers,
        "rate_limits_event": a.reporting.rate_limits_event,
        "usage_delay_ms": round(a.reporting.usage_delay_s * 1000),
    }
