"""The inventory tools' input and output models (`pooler.mcp.tool`): strict inputs
(unknown fields refused, no coercion of numbers or booleans, bounded lists), outputs with
metadata only: masked emails, key prefixes, never a digest, a raw key or a token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pooler.mcp.tool import DEFAULT_LIMIT, MAX_LIMIT

# An id arrives as JSON text: accepted as a string, in either validation mode.
Id = Annotated[UUID, Field(strict=False)]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="At most this many (1-100).")]
PoolRef = Annotated[
    str, Field(min_length=1, max_length=200, description="A Pool's id or its name.")
]
Lifecycle = Literal["active", "paused", "reauth_required", "disabled"]
KeyStatus = Literal["active", "paused", "revoked"]
InviteStatus = Literal["pending", "used", "expired", "revoked"]
StateSource = Literal["stored", "live"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- upstream accounts -------------------------------------------------------------------


class ListAccountsIn(Strict):
    pool: PoolRef | None = None
    lifecycle: Lifecycle | None = None
    limit: Limit = DEFAULT_LIMIT


class AccountIdIn(Strict):
    account_id: Id


class QuotaWindowOut(Out):
    family: str
    window: str = Field(description="primary (short) or secondary (weekly)")
    name: str
    used_percent: float
    window_minutes: int | None
    reset_at: datetime | None
    observed_at: datetime
    source: str = Field(description="what reported it: headers, event, error, usage_api")
    limit_name: str | None


class CreditsOut(Out):
    has_credits: bool
    unlimited: bool
    balance: str | None


class PoolLinkOut(Out):
    pool_id: UUID
    pool_name: str
    assignment_status: str
    weight: int


class ReasonOut(Out):
    code: str
    text: str
    until: datetime | None = Field(description="when it lifts by itself (null: a change must)")
    applies_to: str = Field(description="all, a route class, or `model NAME`")


class VerdictOut(Out):
    pool_name: str
    takes_traffic: bool
    reasons: list[ReasonOut]


class AccountOut(Out):
    id: UUID
    label: str
    email: str | None = Field(description="masked")
    plan_type: str | None
    lifecycle: str
    lifecycle_reason: str | None
    created_at: datetime
    pools: list[PoolLinkOut]
    quota_windows: list[QuotaWindowOut]
    credits: CreditsOut | None
    verdicts: list[VerdictOut] = Field(
        description="per active Pool: why the account is not taking traffic now (empty: it is)"
    )


class AccountListOut(Out):
    accounts: list[AccountOut]
    matched: int
    truncated: bool
    state_source: StateSource = Field(
        description="stored: verdicts from the database (no in-flight, circuit or cooling"
        " state); live: from the gateway's memory"
    )


class AccountDetailOut(Out):
    account: AccountOut
    state_source: StateSource


# --- Pool API keys -----------------------------------------------------------------------


class ListKeysIn(Strict):
    pool: PoolRef | None = None
    status: KeyStatus | None = None
    limit: Limit = DEFAULT_LIMIT


class KeyIdIn(Strict):
    key_id: Id


class KeyOut(Out):
    id: UUID
    prefix: str
    name: str
    pool_id: UUID
    pool_name: str
    status: str
    allowed_models: list[str] | None = Field(description="null: every model")
    reasoning_policy: str
    reasoning_effort: str | None
    reasoning_effort_mode: str | None
    created_at: datetime
    last_used_at: datetime | None
    requests_24h: int


class KeyListOut(Out):
    keys: list[KeyOut]
    truncated: bool


class KeyDetailOut(Out):
    key: KeyOut


# --- operators ---------------------------------------------------------------------------


class ListOperatorsIn(Strict):
    limit: Limit = DEFAULT_LIMIT


class OperatorIdIn(Strict):
    operator_id: Id


class OperatorOut(Out):
    id: UUID
    email: str | None = Field(description="masked")
    role: str
    status: str
    assigned_pools: list[str]
    totp_enabled: bool
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None


class OperatorListOut(Out):
    operators: list[OperatorOut]
    truncated: bool


class OperatorDetailOut(Out):
    operator: OperatorOut


# --- invites -----------------------------------------------------------------------------


class ListInvitesIn(Strict):
    pool: PoolRef | None = None
    status: InviteStatus | None = None
    limit: Limit = DEFAULT_LIMIT


class InviteIdIn(Strict):
    invite_id: Id


class InviteOut(Out):
    id: UUID
    pool_id: UUID
    pool_name: str
    status: str
    created_by: str | None = Field(description="masked when an email")
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    used_by_account: str | None = Field(description="the label of the account it linked")


class InviteListOut(Out):
    invites: list[InviteOut]
    truncated: bool


class InviteDetailOut(Out):
    invite: InviteOut


# --- capacity ----------------------------------------------------------------------------


class CapacityIn(Strict):
    pool: PoolRef | None = None


class WindowCapacityOut(Out):
    window: str = Field(description="primary (short) or secondary (weekly)")
    name: str
    remaining_accounts: float = Field(
        description="room left below the Pool's threshold, summed over usable accounts, in"
        " whole accounts' worth (1.0 = one account's full window)"
    )
    usable_accounts: int
    unsampled_accounts: int = Field(description="usable, no evidence yet (counted as full)")
    earliest_reset: datetime | None


class AtRiskOut(Out):
    account_id: UUID
    label: str
    window: str
    used_percent: float
    percent_per_minute: float
    minutes_to_limit: float
    reset_at: datetime | None


class PoolCapacityOut(Out):
    pool_id: UUID
    pool_name: str
    pool_status: str
    quota_threshold_percent: float
    accounts: int
    usable_accounts: int
    windows: list[WindowCapacityOut]
    at_risk: list[AtRiskOut] = Field(
        description="usable accounts that reach the threshold within the hour at their rate"
        " over the last 30 minutes (request log), before the window resets"
    )


class CapacityOut(Out):
    pools: list[PoolCapacityOut]
    state_source: StateSource
