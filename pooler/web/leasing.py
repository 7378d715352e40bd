"""Getting a Lease for a request: ask the PoolSupervisor, then the chosen AccountActor."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pooler.actors import messages as m
from pooler.actors.runtime import ActorDead, CallTimeout, Mailbox, ReplyTo, call
from pooler.errors import NoEligibleBackend, UsageLimitReached
from pooler.routing.choose import Choice


def continuity_digest(kind: str, value: str) -> bytes:
    return hashlib.blake2b(f"{kind}\0{value}".encode(), digest_size=16).digest()


@dataclass(slots=True)
class LeaseAttempts:
    """What one request learned while leasing: tried accounts, exclusions, quota resets."""

    pool_id: str
    continuity_keys: tuple[bytes, ...]
    tried: set[str] = field(default_factory=set)
    exclusions: dict[str, str] = field(default_factory=dict)
    usage_resets: list[float] = field(default_factory=list)
    last_choice: Choice | None = None


async def lease_account(
    supervisor: Mailbox[Any],
    attempts: LeaseAttempts,
    *,
    timeout: float,  # noqa: ASYNC109  (passed on to call(), the actor edge)
) -> m.Lease | None:
    """The next account to try, or None when no eligible account is left."""

    def request(reply: ReplyTo[m.LeaseGranted]) -> m.LeaseRequest:
        return m.LeaseRequest(
            attempts.pool_id, attempts.continuity_keys, frozenset(attempts.tried), reply
        )

    try:
        granted = await call(supervisor, request, timeout=timeout)
    except (CallTimeout, ActorDead) as exc:
        raise NoEligibleBackend("the account supervisor is not answering", retry_after=1) from exc
    attempts.last_choice = granted.choice
    for label, code in granted.choice.exclusions.items():
        attempts.exclusions.setdefault(label, code)
    labels = {c.label: c.account_id for c in granted.choice.candidates}
    for label in granted.refused:
        attempts.exclusions[label] = "refused"
        if label in labels:
            attempts.tried.add(labels[label])
    return granted.lease


def no_account_error(
    attempts: LeaseAttempts, retry_after: float
) -> UsageLimitReached | NoEligibleBackend:
    """429 when every account is out of quota, else 503 (DESIGN §4)."""
    choice = attempts.last_choice
    resets = list(attempts.usage_resets)
    if choice is not None and choice.earliest_reset is not None:
        resets.append(choice.earliest_reset)
    quota_codes = {"quota_exhausted", "usage_limit", "usage_limit_reached"}
    if (
        resets
        and attempts.exclusions
        and all(code in quota_codes for code in attempts.exclusions.values())
    ):
        return UsageLimitReached(
            "every account in this Pool has reached its usage limit", resets_at=min(resets)
        )
    return NoEligibleBackend("no eligible upstream account in this Pool", retry_after=retry_after)


def release(lease: m.Lease, outcome: m.Outcome) -> None:
    """Hand the lease back; never blocks the request (a full mailbox is counted by it)."""
    lease.mailbox.try_send(m.Release(lease.lease_id, outcome))


def pin(supervisor: Mailbox[Any], pool_id: str, keys: Iterable[bytes], account_id: str) -> None:
    keys = tuple(keys)
    if keys:
        supervisor.try_send(m.PinConversation(pool_id, keys, account_id))
