"""Getting a Lease for a request (ask the PoolSupervisor, then the chosen AccountActor),
refreshing its token, the headers it gives an upstream call, releasing it, and pinning a
conversation to its account. The loop that uses them is `pooler.web.attempts`."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pooler.actors import messages as m
from pooler.actors.account import RefreshUnavailable
from pooler.actors.runtime import ActorDead, CallTimeout, Mailbox, ReplyTo, call
from pooler.errors import NoEligibleBackend
from pooler.routing.choose import Choice
from pooler.web.settings import GatewaySettings


def continuity_digest(kind: str, value: str) -> bytes:
    return hashlib.blake2b(f"{kind}\0{value}".encode(), digest_size=16).digest()


@dataclass(slots=True)
class LeaseAttempts:
    """What one request learned while leasing: tried accounts, exclusions, quota resets,
    and each routing choice made for it (the first says how it met its conversation's pin;
    all of them are its routing story, pooler.web.routing_story)."""

    pool_id: str
    continuity_keys: tuple[bytes, ...]
    hard_key: bytes | None = None
    route_class: str = "responses"
    model: str = ""
    tried: set[str] = field(default_factory=set)
    exclusions: dict[str, str] = field(default_factory=dict)
    usage_resets: list[float] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)

    @property
    def first_choice(self) -> Choice | None:
        return self.choices[0] if self.choices else None

    @property
    def last_choice(self) -> Choice | None:
        return self.choices[-1] if self.choices else None

    @property
    def pin_keys(self) -> tuple[bytes, ...]:
        """Every key the serving account should be pinned under."""
        if self.hard_key is None:
            return self.continuity_keys
        return (self.hard_key, *self.continuity_keys)


async def lease_account(
    supervisor: Mailbox[Any],
    attempts: LeaseAttempts,
    *,
    timeout: float,  # noqa: ASYNC109  (passed on to call(), the actor edge)
    decisions: Counter[str] | None = None,
) -> m.Lease | None:
    """The next account to try, or None when no eligible account is left. `decisions`
    counts each answer (`LEASE_DECISIONS`, for /metrics)."""

    def request(reply: ReplyTo[m.LeaseGranted]) -> m.LeaseRequest:
        return m.LeaseRequest(
            attempts.pool_id,
            attempts.continuity_keys,
            frozenset(attempts.tried),
            reply,
            hard_key=attempts.hard_key,
            route_class=attempts.route_class,
            model=attempts.model,
        )

    try:
        granted = await call(supervisor, request, timeout=timeout)
    except (CallTimeout, ActorDead) as exc:
        if decisions is not None:
            decisions[SUPERVISOR_UNAVAILABLE] += 1
        raise NoEligibleBackend("the account supervisor is not answering", retry_after=1) from exc
    if decisions is not None:
        decisions[lease_decision(granted)] += 1
    attempts.choices.append(granted.choice)
    for label, code in granted.choice.exclusions.items():
        attempts.exclusions.setdefault(label, code)
    if granted.refused:
        labels = {c.label: c.account_id for c in granted.choice.candidates}
        for label in granted.refused:
            attempts.exclusions[label] = "refused"
            if label in labels:
                attempts.tried.add(labels[label])
    return granted.lease


GRANTED, NO_ELIGIBLE, HARD_PIN_UNAVAILABLE, SUPERVISOR_UNAVAILABLE = (
    "granted",
    "no_eligible_account",
    "hard_pin_unavailable",
    "supervisor_unavailable",
)
LEASE_DECISIONS = (GRANTED, NO_ELIGIBLE, HARD_PIN_UNAVAILABLE, SUPERVISOR_UNAVAILABLE)


def lease_decision(granted: m.LeaseGranted) -> str:
    if granted.lease is not None:
        return GRANTED
    return HARD_PIN_UNAVAILABLE if granted.choice.hard_pin_unavailable else NO_ELIGIBLE


async def refreshed_lease(lease: m.Lease, settings: GatewaySettings) -> m.Lease | None:
    """After an upstream 401 (the lease released as UNAUTHORIZED): the same account again,
    with a refreshed token. None: it could not refresh, or no longer takes requests."""
    try:
        await call(
            lease.mailbox,
            lambda reply: m.RefreshNow(lease.access_token, reply),
            timeout=settings.refresh_wait_timeout_s,
        )
        return await call(
            lease.mailbox,
            lambda reply: m.Confirm(reply, lease.route_class),
            timeout=settings.lease_timeout_s,
        )
    except (RefreshUnavailable, CallTimeout, ActorDead):
        return None


def account_headers(
    lease: m.Lease, before: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """`before`, then the leased account's credentials as the backend wants them: the one
    place the upstream account headers are built."""
    return [
        *before,
        (b"authorization", b"Bearer " + lease.access_token.encode()),
        (b"chatgpt-account-id", lease.chatgpt_account_id.encode()),
    ]


def release(lease: m.Lease, outcome: m.Outcome) -> None:
    """Hand the lease back; never blocks the request (a full mailbox is counted by it)."""
    message = m.Release(lease.lease_id, outcome)
    # Taken at once by an idle account (`Mailbox.handle_now`): its mailbox then holds no
    # release when the next request's lease is offered, so that one is inline too.
    if not lease.mailbox.handle_now(message):
        lease.mailbox.try_send(message)


# A file lives on the account that created it for as long as the upstream keeps it.
FILE_PIN_TTL_S = 30 * 24 * 3600.0


def pin(
    supervisor: Mailbox[Any],
    pool_id: str,
    keys: Iterable[bytes],
    account_id: str,
    *,
    hard: bool = False,
    ttl: float | None = None,
) -> None:
    """Pin the conversation's keys to the account serving it (write-behind to Postgres).
    `hard`: the upstream needs that account (a file, a response id), continuity on or off."""
    keys = tuple(keys)
    if keys:
        message = m.PinConversation(pool_id, keys, account_id, hard, ttl)
        if not supervisor.handle_now(message):  # as `release`: an idle supervisor stays so
            supervisor.try_send(message)
