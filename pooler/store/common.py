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
) -> None:
    """Audit a configuration change and announce it on CONFIG_CHANNEL, in the caller's
    transaction (both vanish if it rolls back). `details` must hold no secrets."""
    insert_audit_row(conn, actor, action, target_type, target_id, details)
    notify(conn, CONFIG_CHANNEL, f"{target_type}:{target_id}")


def insert_audit_row(
    conn: Conn,
    actor: str,
    action: str,
    target_type: str,
    target_id: UUID | str,
    details: Mapping[str, Any] | None,
) -> None:
    """One row of the audit trail (text escaped and bounded like every stored text)."""
    conn.execute(
        "INSERT INTO audit_events (actor, action, target_type, target_id, details)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            storable(actor),
            action,
            target_type,
            str(target_id),
            Jsonb(storable_json(dict(details or {}))),
        ),
    )


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
