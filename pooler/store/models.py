"""The frozen records the store returns and takes. None of them holds a secret in clear,
except `Credentials`, whose repr hides its tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Operator:
    id: UUID
    email: str
    role: str  # owner | admin
    status: str  # active | disabled
    created_at: datetime
    last_login_at: datetime | None
    display_name: str = ""
    must_change_password: bool = False
    totp_enabled: bool = False
    password_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class McpToken:
    id: UUID
    operator_id: UUID
    operator_email: str
    name: str
    token_prefix: str
    status: str  # active | revoked
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Pool:
    id: UUID
    name: str
    strategy: str  # least_used | round_robin | fill_first | weighted
    status: str  # active | disabled
    quota_threshold_percent: float
    retry_budget: int
    max_in_flight_per_account: int
    created_at: datetime
    updated_at: datetime
    continuity_enabled: bool = True
    v1_enabled: bool = True  # the OpenAI-compatible /v1 surface answers this Pool's keys


@dataclass(frozen=True, slots=True)
class Assignment:
    pool_id: UUID
    account_id: UUID
    status: str  # active | disabled
    weight: int


@dataclass(frozen=True, slots=True)
class Account:
    id: UUID
    label: str
    email: str | None
    chatgpt_account_id: str
    chatgpt_user_id: str | None
    plan_type: str | None
    lifecycle: str  # active | paused | reauth_required | disabled
    lifecycle_reason: str | None
    access_token_expires_at: datetime | None
    last_refresh_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class QuotaWindowRow:
    """A quota observation to store (the account is given separately)."""

    window: str  # primary | secondary
    used_percent: float
    window_minutes: int | None = None
    reset_at: datetime | None = None
    family: str = "codex"
    observed_at: datetime | None = None  # None: now (server clock)


@dataclass(frozen=True, slots=True)
class StoredQuotaWindow:
    """A quota observation read back from the database, as the account listings show it."""

    account_id: UUID
    family: str
    window: str
    used_percent: float
    window_minutes: int | None
    reset_at: datetime | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as the CLI and admin pages list it."""

    id: UUID
    label: str
    email: str | None
    chatgpt_account_id: str
    chatgpt_user_id: str | None
    plan_type: str | None
    lifecycle: str
    lifecycle_reason: str | None
    access_token_expires_at: datetime | None
    last_refresh_at: datetime | None
    created_at: datetime
    pools: tuple[str, ...]
    quota: tuple[StoredQuotaWindow, ...]


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    access_token: str
    refresh_token: str
    id_token: str | None
    access_token_expires_at: datetime | None

    def __repr__(self) -> str:
        return f"Credentials(<redacted>, access_token_expires_at={self.access_token_expires_at!r})"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    pool_id: UUID
    pool_name: str
    name: str
    key_prefix: str
    status: str  # active | paused | revoked
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    # Policy (pooler.web.key_policy): the models it may use (None: any), and a reasoning
    # effort with its mode ('enforce' or 'max'), both None or both set.
    allowed_models: list[str] | None = None
    reasoning_effort: str | None = None
    reasoning_effort_mode: str | None = None
    rotated_at: datetime | None = None  # when its secret was last replaced


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """An active Pool key in the runtime snapshot (looked up by its digest)."""

    key_id: UUID
    pool_id: UUID
    prefix: str
    name: str
    allowed_models: tuple[str, ...] | None = None
    reasoning_effort: str | None = None
    reasoning_effort_mode: str | None = None


@dataclass(frozen=True, slots=True)
class RuntimeAccount:
    id: UUID
    label: str
    lifecycle: str
    plan_type: str | None
    chatgpt_account_id: str
    chatgpt_user_id: str | None
    email: str | None
    access_token_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class AssignmentEntry:
    account_id: UUID
    weight: int


@dataclass(frozen=True, slots=True)
class RuntimeSnapshot:
    """What the gateway caches in memory; reloaded on NOTIFY pooler_config.

    `keys` holds active keys only (of active and disabled Pools alike), `assignments` only
    active assignments; `quota` is the latest window per (family, window) of each account.
    """

    pools: Mapping[UUID, Pool]
    keys: Mapping[bytes, KeyEntry]
    accounts: Mapping[UUID, RuntimeAccount]
    assignments: Mapping[UUID, tuple[AssignmentEntry, ...]]
    quota: Mapping[UUID, tuple[StoredQuotaWindow, ...]]

    def pool_by_name(self, name: str) -> Pool | None:
        return next((pool for pool in self.pools.values() if pool.name == name), None)


@dataclass(frozen=True, slots=True)
class RequestLogRow:
    """One metadata-only request log row; `request_id` is the client-visible x-request-id."""

    request_id: str
    created_at: datetime
    route: str
    outcome: str
    pool_id: UUID | None = None
    key_prefix: str | None = None
    transport: str | None = None
    model: str | None = None
    stream: bool = False
    status_code: int | None = None
    error_code: str | None = None
    account_id: UUID | None = None
    account_label: str | None = None
    retries: int = 0
    duration_ms: float | None = None
    ttfb_ms: float | None = None
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    # account id (str) -> exclusion code(s) when no account could serve; never secrets
    exclusions: Mapping[str, Any] | None = None
    client_user_agent: str | None = None
    # How the request met its conversation's pin (none|new|kept|moved|disabled), and the
    # account it was pinned to when it moved (the reason is in exclusions under its label).
    continuity: str | None = None
    continuity_from: UUID | None = None
    client_request_id: str | None = None
    client_ip: str | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    # How the account was chosen: {"strategy", "candidates": [{"label", "verdict"}...]}.
    routing: Mapping[str, Any] | None = None
    # What the tokens would have cost at API list prices when recorded (pooler.pricing);
    # None: no usage, or a model the catalog does not list.
    cost_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    request_id: str
    attempt: int  # 1-based
    started_at: datetime
    outcome: str
    account_id: UUID | None = None
    account_label: str | None = None
    duration_ms: float | None = None
    status_code: int | None = None
    error_code: str | None = None
    ttfb_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ContinuityPin:
    pool_id: UUID
    key_digest: bytes  # hash of the continuity key, never the key
    account_id: UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: UUID
    created_at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    pool_id: UUID | None = None  # the one Pool it concerns; None: instance-wide
    outcome: str = "ok"  # ok, refused or failed
