"""What an AccountActor works with: its state that survives restarts, its credentials, and
the I/O it is given (loading, refreshing, persisting, polling). Data and pure helpers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pooler.instance_settings import InstanceSettings
from pooler.protocol.jwt import decode_jwt_claims, jwt_expiry
from pooler.protocol.ratelimit import RateLimitSnapshot
from pooler.routing.circuit import Circuit, CircuitSettings
from pooler.routing.snapshot import AccountSnapshot


@dataclass(frozen=True, slots=True)
class Credentials:
    access_token: str
    issued_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class RefreshResult:
    access_token: str | None
    reauth_reason: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UsageResult:
    evidence: RateLimitSnapshot | None
    unauthorized: bool = False


# The I/O an account needs, provided by the gateway (database and OAuth behind them).
LoadCredentials = Callable[[str], Awaitable[Credentials]]
RefreshCredentials = Callable[[str, str], Awaitable[RefreshResult]]
# (account id, evidence, observed at, source: headers|event|usage_api)
PersistQuota = Callable[[str, RateLimitSnapshot, float, str], None]
# (access token, chatgpt account id) -> what the upstream usage endpoint says.
FetchUsage = Callable[[str, str], Awaitable[UsageResult]]


class RefreshUnavailable(Exception):
    """No usable token: the refresh failed or the account needs a new login."""


@dataclass(slots=True)
class AccountState:
    """What survives an actor restart: identity, lifecycle and quota evidence."""

    snapshot: AccountSnapshot
    chatgpt_account_id: str
    refresh_generation: int = 0
    refresh_failures: int = 0
    # Leases outlive a crash of the actor (their requests keep running), so they live here:
    # lease id -> (route class, admitted as a circuit probe).
    leases: dict[int, tuple[str, bool]] = field(default_factory=dict)
    next_lease: int = 0
    circuits: dict[str, Circuit] = field(default_factory=dict)  # route class -> circuit
    circuit_transitions: int = 0


def circuit_settings(settings: InstanceSettings) -> CircuitSettings:
    return CircuitSettings(
        settings.circuit_failure_threshold,
        settings.circuit_open_seconds,
        settings.circuit_half_open_probes,
    )


def credentials_from_token(access_token: str) -> Credentials:
    issued: float | None = None
    try:
        iat = decode_jwt_claims(access_token).get("iat")
        if isinstance(iat, int | float):
            issued = float(iat)
    except ValueError:
        pass
    return Credentials(access_token, issued, jwt_expiry(access_token))
