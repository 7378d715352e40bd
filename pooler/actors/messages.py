"""The messages account actors and the PoolSupervisor exchange. Small frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pooler.protocol.ratelimit import RateLimitSnapshot

if TYPE_CHECKING:
    from pooler.actors.runtime import Mailbox, ReplyTo
    from pooler.routing.choose import Choice
    from pooler.routing.snapshot import AccountSnapshot
    from pooler.upstream.http1 import UpstreamPool
    from pooler.upstream.websocket import UpstreamWebsocket, WebsocketTarget


class OutcomeKind(StrEnum):
    """How an attempt on a lease ended, as the handler reports it when it releases."""

    OK = "ok"
    USAGE_LIMIT = "usage_limit"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    UNAUTHORIZED = "unauthorized"
    TRANSPORT_ERROR = "transport_error"
    TIMEOUT = "timeout"
    CLIENT_ERROR = "client_error"
    CANCELLED = "cancelled"
    STREAM_FAILED = "stream_failed"


OK = OutcomeKind.OK
USAGE_LIMIT = OutcomeKind.USAGE_LIMIT
RATE_LIMITED = OutcomeKind.RATE_LIMITED
SERVER_ERROR = OutcomeKind.SERVER_ERROR
UNAUTHORIZED = OutcomeKind.UNAUTHORIZED
TRANSPORT_ERROR = OutcomeKind.TRANSPORT_ERROR
TIMEOUT = OutcomeKind.TIMEOUT
CLIENT_ERROR = OutcomeKind.CLIENT_ERROR
CANCELLED = OutcomeKind.CANCELLED
STREAM_FAILED = OutcomeKind.STREAM_FAILED

FAILOVER_KINDS = frozenset({USAGE_LIMIT, RATE_LIMITED, SERVER_ERROR, TRANSPORT_ERROR, TIMEOUT})
# What counts against an account's circuit; a client going away or a bad request does not.
CIRCUIT_FAILURE_KINDS = frozenset({SERVER_ERROR, TRANSPORT_ERROR, TIMEOUT, STREAM_FAILED})
# What moves an account to the back of the order for a while.
DEMOTING_KINDS = CIRCUIT_FAILURE_KINDS | {RATE_LIMITED}


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    account_id: str
    label: str
    chatgpt_account_id: str
    access_token: str
    upstream: UpstreamPool
    mailbox: Mailbox[Any]
    route_class: str = "responses"
    probe: bool = False  # admitted as a half-open circuit probe


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    resets_at: float | None = None
    retry_after: float | None = None
    rate_limits: RateLimitSnapshot | None = None


# --- to an AccountActor -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirm:
    reply_to: ReplyTo[Lease | None]
    route_class: str = "responses"


@dataclass(frozen=True, slots=True)
class Release:
    lease_id: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class RefreshNow:
    """Refresh because the upstream said 401 to `stale_token`; reply with a usable token."""

    stale_token: str
    reply_to: ReplyTo[str]


@dataclass(frozen=True, slots=True)
class RefreshFinished:
    access_token: str | None
    refresh_generation: int
    reauth_reason: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SetLifecycle:
    lifecycle: str
    max_in_flight: int | None = None


@dataclass(frozen=True, slots=True)
class PollUsage:
    """From the Scheduler: poll the upstream usage endpoint now (single flight)."""


@dataclass(frozen=True, slots=True)
class UsagePolled:
    evidence: RateLimitSnapshot | None
    unauthorized_token: str | None = None  # the token the usage endpoint refused


@dataclass(frozen=True, slots=True)
class QuotaEvidence:
    """Quota evidence learned elsewhere (another node, via the database)."""

    evidence: RateLimitSnapshot
    observed_at: float


@dataclass(frozen=True, slots=True)
class TurnEvidence:
    """Quota evidence from one finished websocket turn, ahead of the lease's release."""

    evidence: RateLimitSnapshot
    observed_at: float


@dataclass(frozen=True, slots=True)
class TurnRefused:
    """A websocket turn was refused for the account's limits (usage or rate): act on it now,
    not when the socket's lease is released."""

    lease_id: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class OpenWebsocket:
    """Open an upstream websocket in the actor's nursery and reply with it (or the
    connect failure: a rejection, a handshake or network error, a timeout)."""

    target: WebsocketTarget
    reply_to: ReplyTo[UpstreamWebsocket]


@dataclass(frozen=True, slots=True)
class ReloadCredentials:
    """The stored tokens changed (another node refreshed, an operator re-imported)."""


@dataclass(frozen=True, slots=True)
class CredentialsLoaded:
    access_token: str | None  # None: the stored tokens could not be read


@dataclass(frozen=True, slots=True)
class SetModels:
    """The model slugs (normalized) the account's upstream catalog lists; None: unknown."""

    models: frozenset[str] | None


# --- to the PoolSupervisor ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseCandidate:
    snapshot: AccountSnapshot
    mailbox: Mailbox[Any]


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """The answer to a LeaseRequest: the lease (or None: nothing eligible accepted), the
    routing choice behind it, and the accounts that refused on the way."""

    choice: Choice
    lease: Lease | None
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    pool_id: str
    continuity_keys: tuple[bytes, ...]  # soft pins, strongest first
    exclude: frozenset[str]
    reply_to: ReplyTo[LeaseGranted]
    hard_key: bytes | None = None  # a previous_response_id: its account or nothing
    route_class: str = "responses"
    model: str = ""


@dataclass(frozen=True, slots=True)
class Offer:
    """Supervisor -> the chosen AccountActor: confirm and answer the requester directly, or
    hand the request back (`Refused`) so the next candidate is asked. One hop, not two."""

    request: LeaseRequest
    choice: Choice
    candidates: tuple[LeaseCandidate, ...]  # this account first, then the fallbacks
    refused: tuple[str, ...]
    supervisor: Mailbox[Any]


@dataclass(frozen=True, slots=True)
class Refused:
    offer: Offer


@dataclass(frozen=True, slots=True)
class PinConversation:
    pool_id: str
    continuity_keys: tuple[bytes, ...]
    account_id: str
    # A hard pin (a file, a response id) is what the upstream needs, not a cache affinity:
    # it is kept even when the Pool's continuity is off. `ttl` None: the map's own.
    hard: bool = False
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class UsageTick:
    """From the Scheduler: time to ask the accounts whose usage poll is due."""


@dataclass(frozen=True, slots=True)
class ForwardToAccount:
    """Deliver `message` to one account's actor (if it runs here)."""

    account_id: str
    message: Any


@dataclass(frozen=True, slots=True)
class ApplySettings:
    """New instance settings (circuits, demotion, freshness) for the supervisor and accounts."""

    settings: Any


@dataclass(frozen=True, slots=True)
class ApplyConfig:
    """A fresh runtime snapshot from the database (start, stop or update actors)."""

    snapshot: Any
    reply_to: ReplyTo[None] | None = None


@dataclass(frozen=True, slots=True)
class PoolSnapshots:
    """The snapshots of one Pool's members (empty for an unknown Pool)."""

    pool_id: str
    reply_to: ReplyTo[list[AccountSnapshot]]


@dataclass(frozen=True, slots=True)
class CrashAccount:
    """Fault injection: make the account's running actor raise (tests, chaos drills)."""

    account_id: str
    reply_to: ReplyTo[bool]


@dataclass(frozen=True, slots=True)
class TakeDirtyPins:
    """Hand over the pins changed since the last call: (pool id, key, account id, expiry)."""

    reply_to: ReplyTo[list[tuple[str, bytes, str, float]]]


@dataclass(frozen=True, slots=True)
class RestorePins:
    """Pins read back from the database at start-up: (key, account id, expiry)."""

    pool_id: str
    pins: tuple[tuple[bytes, str, float], ...]


@dataclass(frozen=True, slots=True)
class InjectCrash:
    """Fault injection: the AccountActor raises on receipt, exactly as a bug would."""
