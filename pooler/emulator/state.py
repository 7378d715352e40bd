"""All the emulator's state, in memory, with every decision as a plain method. No I/O.

Every method that depends on the time takes `now` (epoch seconds); the ASGI app passes
`time.time()`. Methods never await, so under Trio nothing interleaves inside one.
"""

from __future__ import annotations

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
from pooler.emulator.prompt_cache import CacheRules
from pooler.emulator.tokens import TokenSet, mint_token_set
from pooler.emulator.usage import (
    WindowView,
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

    # -- quota -------------------------------------------------------------------------

    def windows(self, account: FakeAccount, now: float) -> tuple[WindowView, WindowView]:
        return view(account.primary, now), view(account.secondary, now)

    def rate_limit_headers(self, account: FakeAccount, now: float) -> rj.Headers:
        return rate_limit_headers(*self.windows(account, now))

    def rate_limits_event(self, account: FakeAccount, now: float) -> dict[str, Any]:
        return rate_limits_event(account.plan_type, *self.windows(account, now))

    def usage_payload(self, account: FakeAccount, now: float) -> dict[str, Any]:
        extra = {"user_id": account.user_id, "account_id": account.account_id}
        return usage_payload(
            account.plan_type, *self.windows(account, now), {"email": account.email, **extra}
        )

    def quota_rejection(self, account: FakeAccount, now: float) -> rj.Rejection | None:
        """429 usage_limit_reached while a window is full, until its reset."""
        full = [w for w in (account.primary, account.secondary) if w.exhausted(now)]
        if not full:
            return None
        resets_at = max(w.reset_at(now) for w in full)
        headers = self.rate_limit_headers(account, now)
        return rj.usage_limit_reached(account.plan_type, resets_at, now, headers)

    def charge(self, account: FakeAccount, now: float) -> None:
        """One completed response: primary moves by `percent_per_request`, secondary by 1/10."""
        account.primary.add(self.percent_per_request, now)
        account.secondary.add(self.percent_per_request / 10, now)

    def set_usage(
        self, account: FakeAccount, primary: float | None, secondary: float | None, now: float
    ) -> None:
        for window, value in ((account.primary, primary), (account.secondary, secondary)):
            if value is not None:
                window.roll(now)
                window.used_percent = max(0.0, min(100.0, float(value)))

    # -- faults ------------------------------------------------------------------------

    def arm_fault(
        self,
        key: str,
        kind: str,
        times: int = 1,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> Fault:
        """Raises ValueError for an unknown account or kind."""
        account = self.find_account(key)
        if account is None:
            raise ValueError(f"unknown account {key!r}")
        return self.faults.arm(account.account_id, kind, times, stall_seconds)

    def take_fault(self, account: FakeAccount, kinds: frozenset[str]) -> Fault | None:
        return self.faults.take(account.account_id, kinds)

    def admit_response(
        self, account: FakeAccount, now: float
    ) -> tuple[rj.Rejection | None, Fault | None]:
        """Before answering a turn: an armed fault first, then a full quota window."""
        fault = self.faults.take(account.account_id, RESPONSE_FAULTS)
        if fault is not None:
            return self.fault_rejection(fault, account, now), fault
        return self.quota_rejection(account, now), None

    def fault_rejection(
        self, fault: Fault, account: FakeAccount, now: float
    ) -> rj.Rejection | None:
        """The error answer of an HTTP-status fault; None for stall/disconnect."""
        if fault.kind == "usage_limit_429":
            primary, secondary = self.windows(account, now)
            full = WindowView(100.0, primary.minutes, primary.reset_at, primary.reset_after)
            headers = rate_limit_headers(full, secondary)
            return rj.usage_limit_reached(account.plan_type, primary.reset_at, now, headers)
        if fault.kind == "rate_limit_429":
            return rj.rate_limit_exceeded()
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
        """Clear faults, usage, prompt caches and the request log; tokens stay valid."""
        self.faults.clear()
        self.requests.clear()
        for account in self.accounts:
            account.clear_usage()

    def accounts_view(self, now: float) -> list[dict[str, Any]]:
        return [
            {
                "label": a.label,
                "account_id": a.account_id,
                "email": a.email,
                "plan_type": a.plan_type,
                "primary_used_percent": view(a.primary, now).used_percent,
                "secondary_used_percent": view(a.secondary, now).used_percent,
            }
            for a in self.accounts
        ]
