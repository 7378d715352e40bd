"""The instance settings row: read it, change it by dotted key, put keys back to defaults.

The row holds only what an operator changed (pooler.instance_settings supplies the rest).
A change is checked strictly on its own (unknown keys and bad values are refused, naming the
key) and the merged row leniently, so keys only a newer node knows survive an update here.
Writers lock the row while merging: concurrent changes to different keys all land.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from psycopg.types.json import Jsonb

from pooler.instance_settings import (
    METRICS_TOKEN_DIGEST,
    InstanceSettings,
    SettingsError,
    flat_settings,
    is_setting_key,
    parse_settings,
    with_change,
    without_key,
)
from pooler.store.common import Conn, InvalidInputError, changed_values, record_change

TARGET_TYPE: Final = "instance"
TARGET_ID: Final = "settings"


def get_instance_settings(conn: Conn) -> tuple[dict[str, Any], InstanceSettings]:
    """The stored (changed-only) object and the effective settings."""
    row = conn.execute("SELECT settings FROM instance_settings WHERE id").fetchone()
    raw = dict(row[0]) if row else {}
    return raw, _effective(raw)


def update_instance_settings(
    conn: Conn, changes: Mapping[str, Any], *, actor: str
) -> InstanceSettings:
    """Apply `changes` ({"circuit_open_seconds": 30, "bulkheads.stream.queue": 64}): a
    group key (`bulkheads.stream`) takes a whole object. Refused whole if any is invalid."""
    alone: dict[str, Any] = {}
    for key, value in changes.items():
        _require_key(key)
        alone = with_change(alone, key, value)
    try:
        parse_settings(alone, strict=True)
    except SettingsError as exc:
        raise InvalidInputError(str(exc)) from None
    if not changes:
        return get_instance_settings(conn)[1]
    raw = merged = _locked_raw(conn)
    for key, value in changes.items():
        merged = with_change(merged, key, value)
    return _save(conn, raw, merged, actor, "settings.update", {})


def reset_instance_settings(conn: Conn, keys: Iterable[str], *, actor: str) -> InstanceSettings:
    """Put `keys` back to their defaults (a group key resets the whole group). A key this
    node does not know may still be reset if it is stored."""
    keys = list(keys)
    if not keys:
        return get_instance_settings(conn)[1]
    raw = merged = _locked_raw(conn)
    for key in keys:
        if not is_setting_key(key) and without_key(raw, key) == raw:
            raise InvalidInputError(f"{key} is not an instance setting")
        merged = without_key(merged, key)
    return _save(conn, raw, merged, actor, "settings.reset", {"reset": keys})


def set_metrics_token_digest(conn: Conn, digest: str | None, *, actor: str) -> InstanceSettings:
    """Store the digest of the bearer token /metrics requires (None: /metrics is open
    again). The audit row says what happened, never the digest."""
    raw = _locked_raw(conn)
    merged = dict(raw)
    if digest is None:
        merged.pop(METRICS_TOKEN_DIGEST, None)
    else:
        merged[METRICS_TOKEN_DIGEST] = digest
    action = "settings.metrics_token_" + ("cleared" if digest is None else "created")
    return _save(conn, raw, merged, actor, action, {})


def _flat_effective(raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return flat_settings(parse_settings(raw))
    except SettingsError:  # a stored row this node cannot read: nothing to compare with
        return {}


def _require_key(key: str) -> None:
    if not is_setting_key(key):
        raise InvalidInputError(f"{key} is not an instance setting")


def _effective(raw: Mapping[str, Any]) -> InstanceSettings:
    try:
        return parse_settings(raw)
    except SettingsError as exc:
        raise InvalidInputError(f"the stored instance settings are invalid: {exc}") from None


def _locked_raw(conn: Conn) -> dict[str, Any]:
    conn.execute("INSERT INTO instance_settings (id) VALUES (true) ON CONFLICT (id) DO NOTHING")
    row = conn.execute("SELECT settings FROM instance_settings WHERE id FOR UPDATE").fetchone()
    assert row is not None
    return dict(row[0])


def _save(
    conn: Conn,
    old: dict[str, Any],
    raw: dict[str, Any],
    actor: str,
    action: str,
    details: dict[str, Any],
) -> InstanceSettings:
    """Store `raw` (was `old`); the audit row carries the effective settings that changed,
    by dotted key, before and after."""
    settings = _effective(raw)
    conn.execute(
        "UPDATE instance_settings SET settings = %s, updated_at = now() WHERE id", (Jsonb(raw),)
    )
    details = {**details, **changed_values(_flat_effective(old), flat_settings(settings))}
    record_change(
        conn,
        actor=actor,
        action=action,
        target_type=TARGET_TYPE,
        target_id=TARGET_ID,
        details=details,
    )
    return settings
