"""The one attempt loop every route that calls the upstream goes through.

    lease -> exchange -> release (with its outcome) -> refresh once on a 401 -> exclude
    the account -> lease the next candidate, within the Pool's retry budget, and never once
    a byte has reached the client (DESIGN §2, "Failover").

A route gives the loop an `exchange(attempt)`: one upstream call on `attempt.lease` that
either answers the client (`attempt.ended(outcome)`, or simply returns after the answer)
or reports a failure before the client's first byte (`attempt.failed(outcome, code)`),
after which the loop may refresh the token and ask the same account once more (a 401), or
exclude the account and lease another. The loop records the attempt in the request log,
releases the lease with the attempt's outcome whatever happens (CANCELLED when the
exchange raised before saying), and when no account is left answers with the one
"nobody could serve" error (`exhausted_error`).

The budget counts accounts: `1 + retry_budget` of them at most. The retry on the same
account after a token refresh is not a new candidate and does not spend it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from pooler.actors import messages as m
from pooler.actors.runtime import Mailbox
from pooler.errors import (
    NoEligibleBackend,
    PinnedContinuationUnavailable,
    PoolerError,
    UpstreamError,
    UsageLimitReached,
)
from pooler.routing.choose import PIN_KEPT, PIN_MOVED
from pooler.routing.eligibility import QUOTA_CODES
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.leasing import LeaseAttempts, lease_account, refreshed_lease, release
from pooler.web.request_record import AttemptRecord, RequestRecord
from pooler.web.routing_story import failure_on, routing_story
from pooler.web.settings import GatewaySettings

# Quota exclusions, and the failure codes of attempts that met a usage limit.
QUOTA_FAILURES = QUOTA_CODES | {"usage_limit", "usage_limit_reached"}
# An account that refused for its limits did not fail: when nothing is left, the client
# hears "nothing eligible" (429/503), not "the upstream failed" (502).
LIMIT_KINDS = frozenset({m.USAGE_LIMIT, m.RATE_LIMITED})
_CANCELLED = m.Outcome(m.CANCELLED)


class Attempt:
    """One exchange on a leased account, shared by the loop and the route's exchange."""

    __slots__ = ("failure", "lease", "outcome", "record")

    def __init__(self, lease: m.Lease, record: AttemptRecord) -> None:
        self.lease = lease
        self.record = record
        self.outcome = _CANCELLED  # until the exchange says otherwise
        self.failure: str | None = None

    def ended(self, outcome: m.Outcome, code: str | None = None) -> None:
        """How the exchange ended for its account (the client has its answer, or the
        exchange is about to raise the client's error)."""
        self.outcome = outcome
        self.record.error_code = code

    def failed(self, outcome: m.Outcome, code: str) -> None:
        """Failed before any byte reached the client: the loop may try again."""
        self.outcome = outcome
        self.failure = code
        self.record.error_code = code
        self.record.resets_at = outcome.resets_at


def unreachable(exc: trio.TooSlowError | UpstreamTransportError) -> tuple[m.Outcome, str]:
    """How an upstream that gave no answer counts against its account, and the attempt's
    code: a deadline ran out (`upstream_timeout`) or the transport failed."""
    if isinstance(exc, trio.TooSlowError):
        return m.Outcome(m.TIMEOUT), "upstream_timeout"
    return m.Outcome(m.TRANSPORT_ERROR), f"upstream_{type(exc).__name__}"


Exchange = Callable[[Attempt], Awaitable[None]]


class Leasing(Protocol):
    """What the loop needs of the gateway: the PoolSupervisor's mailbox, the settings, and
    where lease decisions are counted (/metrics)."""

    @property
    def pool_mailbox(self) -> Mailbox[Any]: ...

    @property
    def settings(self) -> GatewaySettings: ...

    @property
    def lease_decisions(self) -> Counter[str]: ...


async def run_attempts(
    gw: Leasing,
    attempts: LeaseAttempts,
    record: RequestRecord,
    exchange: Exchange,
    *,
    budget: int,
) -> None:
    """Run `exchange` on leased accounts until one answers the client, at most
    `1 + budget` accounts; raises `exhausted_error` when none did."""
    mailbox, settings, decisions = gw.pool_mailbox, gw.settings, gw.lease_decisions
    left = 1 + budget
    lease: m.Lease | None = None
    renewed = False  # `lease` is the same account again, with a refreshed token
    last: Attempt | None = None
    serving: AttemptRecord | None = None  # the attempt that took the request
    try:
        while True:
            if lease is None:
                if left == 0:
                    break
                lease = await lease_account(
                    mailbox, attempts, timeout=settings.lease_timeout_s, decisions=decisions
                )
                if lease is None:
                    break
                left -= 1
                renewed = False
            row = AttemptRecord(
                len(record.attempts) + 1, lease.account_id, lease.label, trio.current_time()
            )
            record.attempts.append(row)
            record.account_id, record.account_label = lease.account_id, lease.label
            attempt = Attempt(lease, row)
            serving = row  # whatever the exchange raises, this account had the request
            try:
                await exchange(attempt)
            finally:
                # An exchange that answered the client finished the record inside it: the
                # attempt ends there too, never after its request.
                ended = record.ended
                if ended is None or ended < row.started_at:
                    ended = trio.current_time()
                row.duration_ms = (ended - row.started_at) * 1000.0
                row.outcome = attempt.outcome.kind
                release(lease, attempt.outcome)
            if attempt.failure is None or record.ttfb_ms is not None:
                return  # answered (never fail over once bytes reached the client)
            serving = None
            last = attempt
            record.retries = len(record.attempts)
            if attempt.outcome.kind == m.UNAUTHORIZED and not renewed:
                # The account's token, not the client's key: a 401 relayed would make the
                # CLI drop its own login. Refresh it and ask the same account once more.
                lease = await refreshed_lease(lease, settings)
                if lease is not None:
                    renewed = True
                    continue
            exclude(attempts, attempt)
            lease = None
    finally:
        note_continuity(record, attempts, serving)
    raise exhausted_error(attempts, last, settings.no_backend_retry_after_s)


def exclude(attempts: LeaseAttempts, attempt: Attempt) -> None:
    """Leave a failed account out of the next choices, and remember a usage limit's reset."""
    lease, outcome = attempt.lease, attempt.outcome
    attempts.tried.add(lease.account_id)
    attempts.exclusions[lease.label] = attempt.failure or "failed"
    if outcome.kind == m.USAGE_LIMIT and outcome.resets_at is not None:
        attempts.usage_resets.append(outcome.resets_at)


def all_quota(attempts: LeaseAttempts) -> bool:
    codes = set(attempts.exclusions.values())
    return bool(codes) and codes <= QUOTA_FAILURES


def exhausted_error(
    attempts: LeaseAttempts, last: Attempt | None, retry_after: float
) -> PoolerError:
    """What the client hears when no account answered: 502 when the upstream failed on
    the accounts tried; else "nothing eligible" (`no_account_error`)."""
    refused = last is not None and last.outcome.kind in LIMIT_KINDS
    if last is not None and not refused and not all_quota(attempts):
        return UpstreamError(
            f"the upstream request failed on every account tried ({last.failure})",
            retry_after=retry_after,
        )
    return no_account_error(attempts, retry_after)


def no_account_error(
    attempts: LeaseAttempts, retry_after: float
) -> UsageLimitReached | NoEligibleBackend | PinnedContinuationUnavailable:
    """429 when every account is out of quota, else 503 (DESIGN §4); a hard pin whose
    account cannot serve is its own error: the client must resend the full context."""
    choice = attempts.last_choice
    if choice is not None and choice.hard_pin_unavailable:
        return PinnedContinuationUnavailable(
            "the account holding previous_response_id cannot serve now; resend the request"
            " with the full conversation and without previous_response_id",
            param="previous_response_id",
            extra={"recovery_kind": "restart_with_full_context"},
        )
    resets = list(attempts.usage_resets)
    if choice is not None and choice.earliest_reset is not None:
        resets.append(choice.earliest_reset)
    if resets and all_quota(attempts):
        return UsageLimitReached(
            "every account in this Pool has reached its usage limit", resets_at=min(resets)
        )
    return NoEligibleBackend("no eligible upstream account in this Pool", retry_after=retry_after)


def note_continuity(
    record: RequestRecord, attempts: LeaseAttempts, serving: AttemptRecord | None
) -> None:
    """Say in the log how the request met its conversation, why a pin moved, which
    accounts were left out when that matters (a retry, a moved pin, nobody served), and
    the routing story (`serving`: the attempt that took the request, if one did)."""
    choice = attempts.first_choice
    if choice is None:
        return
    outcome, reason = choice.pin_outcome, choice.pin_reason
    pinned = choice.pin.account_id if choice.pin is not None else None
    if outcome == PIN_KEPT and record.account_id != pinned:
        outcome = PIN_MOVED  # the pinned account failed and another one answered
        reason = failure_on(record.attempts, pinned)
    record.continuity = outcome
    if outcome == PIN_MOVED:
        record.continuity_from = pinned
    if outcome == PIN_MOVED or record.retries or record.account_id is None:
        record.exclusions = dict(attempts.exclusions)
    record.routing = routing_story(attempts, record.attempts, serving, outcome, reason)
