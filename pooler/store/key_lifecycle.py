"""A Pool API key's life after creation: rotate (a new secret for the same record: name,
policy, Pool and history kept, the old secret refused), pause and resume. Each change is
audited and announced (NOTIFY), so running gateways drop or take the secret at once."""

from __future__ import annotations

from typing import Final

from pooler.crypto import display_prefix, generate_pool_key, key_digest
from pooler.store.common import ConflictError, Conn, record_change
from pooler.store.keys import get_key, resolve_key
from pooler.store.models import ApiKey

# Earlier display prefixes kept per key (request logs name a key by its prefix).
KEPT_PREFIXES: Final = 50


def rotate_key(
    conn: Conn, secret_key: bytes, ref: str, *, pool_name: str | None = None, actor: str = "system"
) -> tuple[str, ApiKey]:
    """A new raw secret for the key (active or paused) `resolve_key` finds; returned once,
    never stored. The old secret stops authenticating when this commits."""
    key_id = resolve_key(conn, ref, pool_name)
    old_prefix = get_key(conn, key_id).key_prefix
    raw = generate_pool_key()
    while display_prefix(raw) == old_prefix:  # running websockets tell secrets by prefix
        raw = generate_pool_key()
    row = conn.execute(
        "UPDATE pool_api_keys SET key_prefix = %s, key_digest = %s, rotated_at = now(),"
        " previous_prefixes = (array_prepend(key_prefix, previous_prefixes))[1:%s]"
        " WHERE id = %s AND status <> 'revoked' RETURNING id",
        (display_prefix(raw), key_digest(secret_key, raw), KEPT_PREFIXES, key_id),
    ).fetchone()
    if row is None:
        raise ConflictError("a revoked key cannot be rotated; create a new key")
    key = get_key(conn, key_id)
    record_change(
        conn,
        actor=actor,
        action="api_key.rotate",
        target_type="api_key",
        target_id=key_id,
        details={
            "pool": key.pool_name,
            "name": key.name,
            "prefix": key.key_prefix,
            "previous_prefix": old_prefix,
        },
        pool_id=key.pool_id,
    )
    return raw, key


def pause_key(
    conn: Conn, ref: str, *, pool_name: str | None = None, actor: str = "system"
) -> ApiKey:
    """Refuse the key until it is resumed (the gateway answers as for any invalid key)."""
    return _set_status(conn, ref, pool_name, "active", "paused", actor)


def resume_key(
    conn: Conn, ref: str, *, pool_name: str | None = None, actor: str = "system"
) -> ApiKey:
    return _set_status(conn, ref, pool_name, "paused", "active", actor)


def _set_status(
    conn: Conn, ref: str, pool_name: str | None, before: str, after: str, actor: str
) -> ApiKey:
    key_id = resolve_key(conn, ref, pool_name)
    key = get_key(conn, key_id)
    if key.status == after:
        return key  # already so: nothing to change or audit
    if key.status != before:
        raise ConflictError(f"key {key.key_prefix} is {key.status}: it cannot be {after}")
    changed = conn.execute(
        "UPDATE pool_api_keys SET status = %s WHERE id = %s AND status = %s",
        (after, key_id, before),
    ).rowcount
    if not changed:  # revoked meanwhile
        raise ConflictError(f"key {key.key_prefix} changed meanwhile; reload and try again")
    action = "api_key.pause" if after == "paused" else "api_key.resume"
    record_change(
        conn,
        actor=actor,
        action=action,
        target_type="api_key",
        target_id=key_id,
        details={
            "pool": key.pool_name,
            "name": key.name,
            "prefix": key.key_prefix,
            "before": {"status": before},
            "after": {"status": after},
        },
        pool_id=key.pool_id,
    )
    return get_key(conn, key_id)
