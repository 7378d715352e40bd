"""What every store module shares: its errors, the NOTIFY channels, the audit trail.

StoreError                 a service-layer refusal, safe to show to an operator
├── NotFoundError          "pool not found", "no such key"
├── ConflictError          duplicate name or email, ambiguous prefix
└── InvalidInputError      bad strategy, malformed auth.json, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pooler.db import notify
from pooler.store.text import storable, storable_json, unprintable

# Configuration changed (pools, keys, accounts, assignments, lifecycle): gateways reload their
# RuntimeSnapshot. Payload "<kind>:<id>", e.g. "pool:<uuid>"; informative only.
CONFIG_CHANNEL: Final = "pooler_config"
# An account's stored tokens changed (refresh, re-import). Payload: the account id.
TOKENS_CHANNEL: Final = "pooler_tokens"
# New quota evidence for an account. Payload: the account id.
QUOTA_CHANNEL: Final = "pooler_quota"
# Continuity pins written for a Pool. Payload: the pool id.
CONTINUITY_CHANNEL: Final = "pooler_continuity"
# How an audited event ended (audit_events.outcome, migration 0014).
AUDIT_OUTCOMES: Final = ("ok", "refused", "failed")

Conn = psycopg.Connection[Any]


class StoreError(Exception):
    code = "store_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the input at fault, when one is (a form shows the message there)


class NotFoundError(StoreError):
    code = "not_found"


class ConflictError(StoreError):
    code = "conflict"


class InvalidInputError(StoreError):
    code = "invalid_input"


def record_change(
    conn: Conn,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: UUID | str,
    details: Mapping[str, Any] | None = None,
    pool_id: UUID | None = None,
    outcome: str = "ok",
) -> None:
    """Audit a configuration change and announce it on CONFIG_CHANNEL, in the caller's
    transaction (both vanish if it rolls back). `details` must hold no secrets; a change
    that edits values puts them in `details["before"]` and `details["after"]` (the changed
    ones only). `pool_id`: the one Pool the change concerns (None: instance-wide)."""
    insert_audit_row(
        conn, actor, action, target_type, target_id, details, pool_id=pool_id, outcome=outcome
    )
    notify(conn, CONFIG_CHANNEL, f"{target_type}:{target_id}")


def insert_audit_row(
    conn: Conn,
    actor: str,
    action: str,
    target_type: str,
    target_id: UUID | str,
    details: Mapping[str, Any] | None,
    *,
    pool_id: UUID | None = None,
    outcome: str = "ok",
) -> None:
    """One row of the audit trail (text escaped and bounded like every stored text).
    `outcome`: 'ok', 'refused' (turned away unchecked, e.g. throttled) or 'failed'
    (checked and wrong, or an operation that errored)."""
    require_choice(outcome, AUDIT_OUTCOMES, "audit outcome")
    conn.execute(
        # clock_timestamp(): the events of one transaction keep the order they happened in
        "INSERT INTO audit_events (created_at, actor, action, target_type, target_id, details,"
        " pool_id, outcome) VALUES (clock_timestamp(), %s, %s, %s, %s, %s, %s, %s)",
        (
            storable(actor),
            action,
            target_type,
            str(target_id),
            Jsonb(storable_json(dict(details or {}))),
            pool_id,
            outcome,
        ),
    )


def changed_values(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """`{"before": {...}, "after": {...}}` holding only the keys whose value differs (a key
    missing on one side is None there): what an audit row of an edit carries."""
    keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
    return {
        "before": {k: before.get(k) for k in keys},
        "after": {k: after.get(k) for k in keys},
    }


def require_choice(
    value: str, choices: tuple[str, ...], what: str, *, param: str | None = None
) -> str:
    if value not in choices:
        raise InvalidInputError(
            f"{what} must be one of {', '.join(choices)} (got {value!r})", param
        )
    return value


def check_printable(value: str, what: str, *, param: str | None = None) -> str:
    """Refuse a name an operator would see printed if it holds a control or other
    unprintable character (an ANSI escape, NUL, a bidi override, ...)."""
    if unprintable(value):
        raise InvalidInputError(
            f"{what} cannot contain control or other unprintable characters"
            " (such as NUL, tabs, newlines or terminal escapes)",
            param,
        )
    return value
