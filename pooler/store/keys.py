"""Pool API keys: shown once, stored as an HMAC-SHA256 digest plus a display prefix, with
a policy of their own: the models they may use and a reasoning effort (enforced, or a
ceiling). The gateway applies the policy (pooler.web.key_policy). A key is `active`,
`paused` (refused, resumable) or `revoked` (for good); its name is unique among the Pool's
keys that are not revoked. Rotation and pausing: `pooler.store.key_lifecycle`."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from pooler.crypto import display_prefix, generate_pool_key, key_digest
from pooler.store.common import (
    ConflictError,
    Conn,
    InvalidInputError,
    NotFoundError,
    changed_values,
    check_printable,
    record_change,
    require_choice,
)
from pooler.store.models import ApiKey
from pooler.store.pools import get_pool
from pooler.store.text import findable

# Reasoning efforts, lowest first (the order a 'max' policy compares by).
REASONING_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh")
EFFORT_MODES: Final = ("enforce", "max")
MAX_ALLOWED_MODELS: Final = 200

_COLUMNS: Final = (
    "k.id, k.pool_id, p.name AS pool_name, k.name, k.key_prefix, k.status, k.created_at,"
    " k.last_used_at, k.revoked_at, k.allowed_models, k.reasoning_effort,"
    " k.reasoning_effort_mode, k.rotated_at"
)
_FROM: Final = "pool_api_keys k JOIN pools p ON p.id = k.pool_id"


@dataclass(frozen=True, slots=True)
class EffortPolicy:
    """'enforce' rewrites every request's reasoning effort to `effort`; 'max' refuses one
    above it."""

    mode: str
    effort: str

    def __post_init__(self) -> None:
        require_choice(self.mode, EFFORT_MODES, "reasoning effort mode")
        require_choice(self.effort, REASONING_EFFORTS, "reasoning effort")


class Keep(enum.Enum):
    """An `update_key` argument left as it is."""

    KEEP = enum.auto()


KEEP: Final = Keep.KEEP


def parse_effort_policy(text: str) -> EffortPolicy | None:
    """`enforce:high` or `max:medium`; `none` (or empty): no effort policy."""
    text = text.strip().lower()
    if text in ("", "none"):
        return None
    mode, sep, effort = text.partition(":")
    if not sep:
        raise InvalidInputError(
            f"a reasoning effort policy is enforce:EFFORT, max:EFFORT or none (got {text!r})"
        )
    return EffortPolicy(mode.strip(), effort.strip())


def parse_allowed_models(text: str) -> list[str] | None:
    """`m1,m2` (a comma-separated list); `any` (or empty): every model."""
    if text.strip().lower() in ("", "any"):
        return None
    return check_allowed_models(text.split(","))


def check_allowed_models(models: Iterable[str]) -> list[str]:
    """Trimmed, without blanks or duplicates, in the given order; at least one."""
    found: list[str] = []
    for model in models:
        model = model.strip()
        if len(model) > 200:
            raise InvalidInputError("a model name has at most 200 characters")
        if model and model not in found:
            found.append(model)
    if not found:
        raise InvalidInputError("name at least one allowed model (or 'any')")
    if len(found) > MAX_ALLOWED_MODELS:
        raise InvalidInputError(f"at most {MAX_ALLOWED_MODELS} allowed models")
    return found


def create_key(
    conn: Conn,
    secret_key: bytes,
    pool_name: str,
    name: str,
    *,
    allowed_models: Iterable[str] | None = None,
    effort: EffortPolicy | None = None,
    actor: str = "system",
) -> tuple[str, ApiKey]:
    """A new key for the Pool; the raw key is returned once and never stored.

    `allowed_models` None: any model; `effort` None: the client's own reasoning effort."""
    check_key_name(name)
    models = check_allowed_models(allowed_models) if allowed_models is not None else None
    pool = get_pool(conn, pool_name)
    raw = generate_pool_key()
    # A name is unique among the Pool's keys that are not revoked (migrations 0005, 0007);
    # empty: unnamed.
    row = conn.execute(
        "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest, allowed_models,"
        " reasoning_effort, reasoning_effort_mode) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (pool_id, name) WHERE status <> 'revoked' AND name <> '' DO NOTHING"
        " RETURNING id",
        (
            pool.id,
            name,
            display_prefix(raw),
            key_digest(secret_key, raw),
            models,
            effort.effort if effort else None,
            effort.mode if effort else None,
        ),
    ).fetchone()
    if row is None:
        raise _name_taken(conn, pool_name, name)
    key = get_key(conn, row[0])
    record_change(
        conn,
        actor=actor,
        action="api_key.create",
        target_type="api_key",
        target_id=key.id,
        details={"pool": pool_name, "name": name, "prefix": key.key_prefix, **_policy(key)},
        pool_id=key.pool_id,
    )
    return raw, key


def update_key(
    conn: Conn,
    ref: str,
    *,
    pool_name: str | None = None,
    allowed_models: Iterable[str] | Literal[Keep.KEEP] | None = KEEP,
    effort: EffortPolicy | Literal[Keep.KEEP] | None = KEEP,
    name: str | Literal[Keep.KEEP] = KEEP,
    actor: str = "system",
) -> ApiKey:
    """Change a key's policy or name; `ref` is its id, display prefix or (keys not revoked,
    optionally in `pool_name`) name. None clears a setting, KEEP leaves it."""
    key_id = resolve_key(conn, ref, pool_name)
    changes: dict[str, Any] = {}
    if name is not KEEP:
        changes["name"] = check_key_name(name)
    if allowed_models is not KEEP:
        changes["allowed_models"] = (
            check_allowed_models(allowed_models) if allowed_models is not None else None
        )
    if effort is not KEEP:
        changes["reasoning_effort"] = effort.effort if effort else None
        changes["reasoning_effort_mode"] = effort.mode if effort else None
    if not changes:
        return get_key(conn, key_id)
    before = _editable(get_key(conn, key_id, lock=True))
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    try:
        with conn.transaction():
            conn.execute(
                f"UPDATE pool_api_keys SET {assignments} WHERE id = %(id)s",
                {**changes, "id": key_id},
            )
    except psycopg.errors.UniqueViolation:
        current = get_key(conn, key_id)
        raise _name_taken(conn, current.pool_name, changes["name"]) from None
    key = get_key(conn, key_id)
    after = _editable(key)
    record_change(
        conn,
        actor=actor,
        action="api_key.update",
        target_type="api_key",
        target_id=key.id,
        details={
            "pool": key.pool_name,
            "prefix": key.key_prefix,
            **changed_values({c: before[c] for c in changes}, {c: after[c] for c in changes}),
        },
        pool_id=key.pool_id,
    )
    return key


def check_key_name(name: str) -> str:
    check_printable(name, "a key name")
    if len(name) > 100 or name != name.strip():
        raise InvalidInputError("a key name has at most 100 characters, without surrounding spaces")
    return name


def _name_taken(conn: Conn, pool_name: str, name: str) -> ConflictError:
    row = conn.execute(
        "SELECT k.status FROM pool_api_keys k JOIN pools p ON p.id = k.pool_id"
        " WHERE p.name = %s AND k.name = %s AND k.status <> 'revoked'",
        (pool_name, name),
    ).fetchone()
    holder = "a paused" if row is not None and row[0] == "paused" else "an active"
    return ConflictError(
        f"pool {pool_name!r} already has {holder} key named {name!r}; choose another name"
    )


def resolve_key(conn: Conn, ref: str, pool_name: str | None = None) -> UUID:
    """The one key whose id or display prefix is `ref`, else the one key (not revoked)
    named `ref` (in `pool_name` when given); NotFound or Conflict (ambiguous) otherwise."""
    if not findable(ref):
        raise NotFoundError("no such key (the reference holds a NUL or an invalid character)")
    try:
        return find_one_by_prefix_or_id(conn, "pool_api_keys", "key_prefix", ref, "key")
    except NotFoundError:
        pass
    pool_id = get_pool(conn, pool_name).id if pool_name is not None else None
    rows = conn.execute(
        "SELECT id FROM pool_api_keys WHERE name = %s AND status <> 'revoked'"
        " AND (%s::uuid IS NULL OR pool_id = %s) LIMIT 2",
        (ref, pool_id, pool_id),
    ).fetchall()
    shown = ref if len(ref) <= 36 else display_prefix(ref) + "..."
    if not rows:
        raise NotFoundError(f"no key with id, prefix or name {shown!r}")
    if len(rows) > 1:
        raise ConflictError(f"several active keys are named {shown!r}; use the key prefix")
    found: UUID = rows[0][0]
    return found


def _editable(key: ApiKey) -> dict[str, Any]:
    """What `update_key` edits, as stored."""
    return {"name": key.name, **_policy(key)}


def _policy(key: ApiKey) -> dict[str, Any]:
    return {
        "allowed_models": key.allowed_models,
        "reasoning_effort": key.reasoning_effort,
        "reasoning_effort_mode": key.reasoning_effort_mode,
    }


def list_keys(conn: Conn, pool_name: str | None = None) -> list[ApiKey]:
    cur = conn.cursor(row_factory=class_row(ApiKey))
    if pool_name is None:
        return cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY k.created_at").fetchall()
    pool = get_pool(conn, pool_name)
    return cur.execute(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE k.pool_id = %s ORDER BY k.created_at", (pool.id,)
    ).fetchall()


def revoke_key(
    conn: Conn, ref: str, *, pool_name: str | None = None, actor: str = "system"
) -> ApiKey:
    """Revoke (active or paused) by key id, display prefix or (keys not revoked, optionally
    in `pool_name`) name, as `resolve_key` finds it (an ambiguous prefix or name is
    refused)."""
    key_id = resolve_key(conn, ref, pool_name)
    conn.execute(
        "UPDATE pool_api_keys SET status = 'revoked', revoked_at = now()"
        " WHERE id = %s AND status <> 'revoked'",
        (key_id,),
    )
    key = get_key(conn, key_id)
    record_change(
        conn,
        actor=actor,
        action="api_key.revoke",
        target_type="api_key",
        target_id=key.id,
        details={"pool": key.pool_name, "prefix": key.key_prefix},
        pool_id=key.pool_id,
    )
    return key


def mark_keys_used(conn: Conn, last_used: Mapping[UUID, datetime]) -> None:
    """Record when keys were last used (batched by the gateway; not audited, no NOTIFY)."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE pool_api_keys SET last_used_at = greatest(last_used_at, %s) WHERE id = %s",
            [(when, key_id) for key_id, when in last_used.items()],
        )


def find_one_by_prefix_or_id(
    conn: Conn, table: str, prefix_column: str, prefix_or_id: str, what: str
) -> UUID:
    """The id of the one row whose id or display prefix is `prefix_or_id`."""
    if not findable(prefix_or_id):
        raise NotFoundError(f"no {what} with that id or prefix (it holds an invalid character)")
    try:
        ident: UUID | None = UUID(prefix_or_id)
    except ValueError:
        ident = None
    query = sql.SQL("SELECT id FROM {} WHERE id = %s OR {} = %s LIMIT 2").format(
        sql.Identifier(table), sql.Identifier(prefix_column)
    )
    rows = conn.execute(query, (ident, prefix_or_id)).fetchall()
    # never echo what might be a whole raw key pasted by mistake
    shown = prefix_or_id if len(prefix_or_id) <= 36 else display_prefix(prefix_or_id) + "..."
    if not rows:
        raise NotFoundError(f"no {what} with id or prefix {shown!r}")
    if len(rows) > 1:
        raise ConflictError(f"prefix {shown!r} matches several; use the {what} id")
    result: UUID = rows[0][0]
    return result


def get_key(conn: Conn, key_id: UUID, *, lock: bool = False) -> ApiKey:
    """The key; `lock`: its row locked until the transaction ends (FOR UPDATE)."""
    cur = conn.cursor(row_factory=class_row(ApiKey))
    suffix = " FOR UPDATE OF k" if lock else ""
    key = cur.execute(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE k.id = %s{suffix}", (key_id,)
    ).fetchone()
    if key is None:
        raise NotFoundError(f"key {key_id} not found")
    return key
