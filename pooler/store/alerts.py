"""Alert rules and channels per Pool (`pooler.alerts`), and the senders' own secrets.

A webhook channel's signing secret is generated here, returned once to its creator and
stored as AES-256-GCM ciphertext under the keyring, bound to the channel's id; the SMTP
password likewise, bound to its name. Changes are audited (never with a secret).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from pooler.alerts.rules import KINDS, THRESHOLDS, Rule
from pooler.crypto import Keyring
from pooler.outbound_url import outbound_url_refusal
from pooler.store.common import (
    Conn,
    InvalidInputError,
    NotFoundError,
    check_printable,
    record_change,
    require_choice,
)

CHANNEL_KINDS: Final = ("webhook", "email")
MAX_URL: Final = 2048
MAX_RULES_PER_POOL: Final = 50
MAX_CHANNELS_PER_POOL: Final = 20
SMTP_PASSWORD: Final = "smtp.password"


@dataclass(frozen=True, slots=True)
class StoredRule:
    id: UUID
    pool_id: UUID
    pool_name: str
    kind: str
    threshold: float | None
    min_requests: int
    created_at: datetime

    def rule(self) -> Rule:
        return Rule(self.id, self.pool_id, self.kind, self.threshold, self.min_requests)


@dataclass(frozen=True, slots=True)
class Channel:
    id: UUID
    pool_id: UUID
    pool_name: str
    kind: str
    name: str
    url: str | None
    email_to: str | None
    created_at: datetime

    @property
    def target(self) -> str:
        """Where it sends, for a listing (a webhook's URL without its query)."""
        if self.kind == "email":
            return self.email_to or ""
        parts = urlsplit(self.url or "")
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


_RULE_COLUMNS: Final = "r.id, r.pool_id, p.name, r.kind, r.threshold, r.min_requests, r.created_at"
_CHANNEL_COLUMNS: Final = "c.id, c.pool_id, p.name, c.kind, c.name, c.url, c.email_to, c.created_at"


def _scope(pool_ids: frozenset[UUID] | None) -> list[UUID] | None:
    return None if pool_ids is None else list(pool_ids)


def list_rules(conn: Conn, pool_ids: frozenset[UUID] | None = None) -> list[StoredRule]:
    """The rules of `pool_ids` (every Pool's for None), by Pool and age."""
    rows = conn.execute(
        f"SELECT {_RULE_COLUMNS} FROM alert_rules r JOIN pools p ON p.id = r.pool_id"
        " WHERE %(scope)s::uuid[] IS NULL OR r.pool_id = ANY(%(scope)s::uuid[])"
        " ORDER BY p.name, r.created_at, r.id",
        {"scope": _scope(pool_ids)},
    ).fetchall()
    return [StoredRule(*row) for row in rows]


def add_rule(
    conn: Conn,
    pool_id: UUID,
    kind: str,
    threshold: float | None,
    *,
    min_requests: int = 10,
    actor: str,
) -> StoredRule:
    require_choice(kind, KINDS, "rule kind", param="kind")
    bounds = THRESHOLDS[kind]
    if bounds is None:
        if threshold is not None:
            raise InvalidInputError(f"a {kind} rule takes no threshold", "threshold")
    else:
        unit, low, high = bounds
        if threshold is None or not low <= threshold <= high:
            raise InvalidInputError(
                f"a {kind} rule needs a threshold between {low:g} and {high:g} ({unit})",
                "threshold",
            )
    if not 1 <= min_requests <= 1_000_000:
        raise InvalidInputError("min_requests must be between 1 and 1000000", "min_requests")
    count = conn.execute(
        "SELECT count(*) FROM alert_rules WHERE pool_id = %s", (pool_id,)
    ).fetchone()
    if count is not None and count[0] >= MAX_RULES_PER_POOL:
        raise InvalidInputError(f"a Pool has at most {MAX_RULES_PER_POOL} alert rules")
    row = conn.execute(
        "INSERT INTO alert_rules (pool_id, kind, threshold, min_requests, created_by)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (pool_id, kind, threshold, min_requests, actor[:300]),
    ).fetchone()
    assert row is not None
    record_change(
        conn,
        actor=actor,
        action="alert_rule.create",
        target_type="alert_rule",
        target_id=row[0],
        details={"kind": kind, "threshold": threshold, "min_requests": min_requests},
        pool_id=pool_id,
    )
    return get_rule(conn, row[0])


def get_rule(conn: Conn, rule_id: UUID) -> StoredRule:
    row = conn.execute(
        f"SELECT {_RULE_COLUMNS} FROM alert_rules r JOIN pools p ON p.id = r.pool_id"
        " WHERE r.id = %s",
        (rule_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError("alert rule not found")
    return StoredRule(*row)


def delete_rule(conn: Conn, rule_id: UUID, *, actor: str) -> StoredRule:
    """Delete a rule, and with it its incidents (open ones stop without a notice)."""
    rule = get_rule(conn, rule_id)
    conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,))
    record_change(
        conn,
        actor=actor,
        action="alert_rule.delete",
        target_type="alert_rule",
        target_id=rule_id,
        details={"kind": rule.kind, "threshold": rule.threshold},
        pool_id=rule.pool_id,
    )
    return rule


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host, printable and bounded; else refused."""
    refusal = outbound_url_refusal(url) if url and len(url) <= MAX_URL else "unprintable"
    if refusal == "unprintable":
        raise InvalidInputError(
            f"the webhook URL must be printable and at most {MAX_URL} characters", "url"
        )
    if refusal == "invalid":
        raise InvalidInputError("the webhook URL is not a valid URL", "url")
    if refusal == "not_http":
        raise InvalidInputError("the webhook URL must be http:// or https:// with a host", "url")
    if refusal == "credentials":
        raise InvalidInputError("the webhook URL cannot carry credentials", "url")
    return url


def check_email(address: str) -> str:
    address = address.strip()
    if (
        not 3 <= len(address) <= 320
        or address.count("@") != 1
        or any(ch.isspace() or not ch.isprintable() or ch in '<>,;"' for ch in address)
        or address.startswith("@")
        or address.endswith("@")
    ):
        raise InvalidInputError("the recipient must be one email address", "email")
    return address


def _channel_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInputError("a channel name has 1 to 100 characters", "name")
    return check_printable(name, "a channel name", param="name")


def _check_room(conn: Conn, pool_id: UUID) -> None:
    count = conn.execute(
        "SELECT count(*) FROM alert_channels WHERE pool_id = %s", (pool_id,)
    ).fetchone()
    if count is not None and count[0] >= MAX_CHANNELS_PER_POOL:
        raise InvalidInputError(f"a Pool has at most {MAX_CHANNELS_PER_POOL} alert channels")


def _secret_aad(channel_id: UUID) -> bytes:
    return b"codex-pooler alert channel v1\x00" + channel_id.bytes


def add_webhook(
    conn: Conn, keyring: Keyring, pool_id: UUID, name: str, url: str, *, actor: str
) -> tuple[Channel, str]:
    """A webhook channel and its signing secret (returned here only, stored encrypted)."""
    name, url = _channel_name(name), check_webhook_url(url)
    _check_room(conn, pool_id)
    channel_id = uuid4()
    secret = "whsec_" + secrets.token_urlsafe(32)
    version, nonce, ciphertext = keyring.encrypt(secret.encode(), _secret_aad(channel_id))
    conn.execute(
        "INSERT INTO alert_channels (id, pool_id, kind, name, url, key_version, nonce,"
        " ciphertext, created_by) VALUES (%s, %s, 'webhook', %s, %s, %s, %s, %s, %s)",
        (channel_id, pool_id, name, url, version, nonce, ciphertext, actor[:300]),
    )
    _audit_channel(conn, channel_id, pool_id, "alert_channel.create", actor, "webhook", name)
    return get_channel(conn, channel_id), secret


def add_email(conn: Conn, pool_id: UUID, name: str, email_to: str, *, actor: str) -> Channel:
    name, email_to = _channel_name(name), check_email(email_to)
    _check_room(conn, pool_id)
    channel_id = uuid4()
    conn.execute(
        "INSERT INTO alert_channels (id, pool_id, kind, name, email_to, created_by)"
        " VALUES (%s, %s, 'email', %s, %s, %s)",
        (channel_id, pool_id, name, email_to, actor[:300]),
    )
    _audit_channel(conn, channel_id, pool_id, "alert_channel.create", actor, "email", name)
    return get_channel(conn, channel_id)


def _audit_channel(
    conn: Conn, channel_id: UUID, pool_id: UUID, action: str, actor: str, kind: str, name: str
) -> None:
    record_change(
        conn,
        actor=actor,
        action=action,
        target_type="alert_channel",
        target_id=channel_id,
        details={"kind": kind, "name": name},
        pool_id=pool_id,
    )


def get_channel(conn: Conn, channel_id: UUID) -> Channel:
    row = conn.execute(
        f"SELECT {_CHANNEL_COLUMNS} FROM alert_channels c JOIN pools p ON p.id = c.pool_id"
        " WHERE c.id = %s",
        (channel_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError("alert channel not found")
    return Channel(*row)


def list_channels(conn: Conn, pool_ids: frozenset[UUID] | None = None) -> list[Channel]:
    rows = conn.execute(
        f"SELECT {_CHANNEL_COLUMNS} FROM alert_channels c JOIN pools p ON p.id = c.pool_id"
        " WHERE %(scope)s::uuid[] IS NULL OR c.pool_id = ANY(%(scope)s::uuid[])"
        " ORDER BY p.name, c.name, c.id",
        {"scope": _scope(pool_ids)},
    ).fetchall()
    return [Channel(*row) for row in rows]


def delete_channel(conn: Conn, channel_id: UUID, *, actor: str) -> Channel:
    channel = get_channel(conn, channel_id)
    conn.execute("DELETE FROM alert_channels WHERE id = %s", (channel_id,))
    _audit_channel(
        conn, channel_id, channel.pool_id, "alert_channel.delete", actor, channel.kind, channel.name
    )
    return channel


def webhook_secret(conn: Conn, keyring: Keyring, channel_id: UUID) -> bytes:
    """A webhook channel's signing secret, decrypted (re-encrypted under the current key
    when an older one sealed it)."""
    row = conn.execute(
        "SELECT key_version, nonce, ciphertext FROM alert_channels WHERE id = %s",
        (channel_id,),
    ).fetchone()
    if row is None or row[2] is None:
        raise NotFoundError("alert channel not found")
    secret = keyring.decrypt(row[0], row[1], row[2], _secret_aad(channel_id))
    if keyring.needs_reencrypt(row[0]):
        version, nonce, ciphertext = keyring.encrypt(secret, _secret_aad(channel_id))
        conn.execute(
            "UPDATE alert_channels SET key_version = %s, nonce = %s, ciphertext = %s WHERE id = %s",
            (version, nonce, ciphertext, channel_id),
        )
    return secret


def set_smtp_password(conn: Conn, keyring: Keyring, password: str | None, *, actor: str) -> None:
    """Store (None: forget) the SMTP password, encrypted."""
    if password is None:
        conn.execute("DELETE FROM alert_secrets WHERE name = %s", (SMTP_PASSWORD,))
    else:
        if not 1 <= len(password) <= 1000:
            raise InvalidInputError("the SMTP password has 1 to 1000 characters")
        version, nonce, ciphertext = keyring.encrypt(password.encode(), SMTP_PASSWORD.encode())
        conn.execute(
            "INSERT INTO alert_secrets (name, key_version, nonce, ciphertext)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " key_version = EXCLUDED.key_version, nonce = EXCLUDED.nonce,"
            " ciphertext = EXCLUDED.ciphertext, updated_at = now()",
            (SMTP_PASSWORD, version, nonce, ciphertext),
        )
    record_change(
        conn,
        actor=actor,
        action="alert_smtp_password.set" if password is not None else "alert_smtp_password.clear",
        target_type="instance",
        target_id="smtp",
    )


def smtp_password(conn: Conn, keyring: Keyring) -> str | None:
    row = conn.execute(
        "SELECT key_version, nonce, ciphertext FROM alert_secrets WHERE name = %s",
        (SMTP_PASSWORD,),
    ).fetchone()
    if row is None:
        return None
    return keyring.decrypt(row[0], row[1], row[2], SMTP_PASSWORD.encode()).decode()


def reencrypt_alert_secrets(conn: Conn, keyring: Keyring) -> int:
    """Re-encrypt the webhook secrets and the SMTP password not under the current key
    (`pooler rotate-keys`); how many."""
    count = 0
    for (channel_id,) in conn.execute(
        "SELECT id FROM alert_channels WHERE kind = 'webhook' AND key_version <> %s FOR UPDATE",
        (keyring.current_version,),
    ).fetchall():
        webhook_secret(conn, keyring, channel_id)  # re-encrypts as it reads
        count += 1
    row = conn.execute(
        "SELECT key_version FROM alert_secrets WHERE name = %s FOR UPDATE", (SMTP_PASSWORD,)
    ).fetchone()
    if row is not None and keyring.needs_reencrypt(row[0]):
        password = smtp_password(conn, keyring)
        version, nonce, ciphertext = keyring.encrypt(
            (password or "").encode(), SMTP_PASSWORD.encode()
        )
        conn.execute(
            "UPDATE alert_secrets SET key_version = %s, nonce = %s, ciphertext = %s"
            " WHERE name = %s",
            (version, nonce, ciphertext, SMTP_PASSWORD),
        )
        count += 1
    return count
