"""Upstream account tokens, encrypted at rest (AES-256-GCM, keyring in pooler.crypto).

Each secret's AAD is `"<account id>:<kind>"`, so a ciphertext copied onto another account or
kind fails to decrypt. Rows under an old key are re-encrypted under the current key when
read (`load_account_credentials`) or all at once (`reencrypt_all_secrets`).

Refresh is single-flight across nodes: the caller takes `account_refresh_lock` in its
transaction, re-reads the credentials (another node may have refreshed meanwhile), refreshes
if still needed, and stores the result with `store_refreshed_tokens` before committing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from uuid import UUID

from pooler.crypto import Keyring
from pooler.db import notify
from pooler.store.common import TOKENS_CHANNEL, Conn, NotFoundError
from pooler.store.jwt_claims import ClaimsError, identity_from_tokens
from pooler.store.models import Credentials

TOKEN_KINDS: Final = ("access_token", "refresh_token", "id_token")


def account_refresh_lock(conn: Conn, account_id: UUID) -> None:
    """Block until this transaction holds the account's refresh lock (released at commit or
    rollback). Needs a transaction: `Database.run` provides one."""
    if conn.autocommit:
        raise RuntimeError("account_refresh_lock needs a transaction, not autocommit")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (refresh_lock_key(account_id),))


def refresh_lock_key(account_id: UUID) -> int:
    """A stable signed bigint for the account, namespaced away from other advisory locks."""
    digest = hashlib.sha256(b"pooler account refresh\x00" + account_id.bytes).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def write_secrets(
    conn: Conn, keyring: Keyring, account_id: UUID, secrets: Mapping[str, str]
) -> None:
    """Encrypt and upsert each (kind -> clear text) under the current key."""
    rows = []
    for kind, clear in secrets.items():
        if kind not in TOKEN_KINDS:
            raise ValueError(f"unknown secret kind {kind!r}")
        version, nonce, ciphertext = keyring.encrypt(clear.encode(), _aad(account_id, kind))
        rows.append((account_id, kind, version, nonce, ciphertext))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO account_secrets (account_id, kind, key_version, nonce, ciphertext)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account_id, kind) DO UPDATE SET"
            " key_version = EXCLUDED.key_version, nonce = EXCLUDED.nonce,"
            " ciphertext = EXCLUDED.ciphertext, updated_at = now()",
            rows,
        )


def load_account_credentials(conn: Conn, keyring: Keyring, account_id: UUID) -> Credentials:
    """Decrypt the account's tokens; rows under an old key are re-encrypted on the way."""
    account = conn.execute(
        "SELECT access_token_expires_at FROM upstream_accounts WHERE id = %s", (account_id,)
    ).fetchone()
    if account is None:
        raise NotFoundError(f"account {account_id} not found")
    rows = conn.execute(
        "SELECT kind, key_version, nonce, ciphertext FROM account_secrets WHERE account_id = %s",
        (account_id,),
    ).fetchall()
    clear: dict[str, str] = {}
    stale: dict[str, str] = {}
    for kind, version, nonce, ciphertext in rows:
        value = keyring.decrypt(version, nonce, ciphertext, _aad(account_id, kind)).decode()
        clear[kind] = value
        if keyring.needs_reencrypt(version):
            stale[kind] = value
    if "access_token" not in clear or "refresh_token" not in clear:
        raise NotFoundError(f"account {account_id} has no stored tokens")
    if stale:
        write_secrets(conn, keyring, account_id, stale)
    return Credentials(
        access_token=clear["access_token"],
        refresh_token=clear["refresh_token"],
        id_token=clear.get("id_token"),
        access_token_expires_at=account[0],
    )


def store_refreshed_tokens(
    conn: Conn,
    keyring: Keyring,
    account_id: UUID,
    access_token: str,
    refresh_token: str | None,
    id_token: str | None,
    expires_at: datetime | None,
) -> None:
    """Store the result of a token refresh (a None token keeps the stored one) and announce
    it on TOKENS_CHANNEL. Email and plan follow the new tokens' claims when present."""
    account_refresh_lock(conn, account_id)  # re-entrant if the caller holds it already
    try:
        identity = identity_from_tokens(id_token, access_token)
        plan, email = identity.plan_type, identity.email
    except ClaimsError:
        plan = email = None  # opaque tokens are fine; keep what we knew
    updated = conn.execute(
        "UPDATE upstream_accounts SET access_token_expires_at = %s, last_refresh_at = now(),"
        " plan_type = coalesce(%s, plan_type), email = coalesce(%s, email), updated_at = now()"
        " WHERE id = %s RETURNING id",
        (expires_at, plan, email, account_id),
    ).fetchone()
    if updated is None:
        raise NotFoundError(f"account {account_id} not found")
    fresh = {"access_token": access_token}
    if refresh_token is not None:
        fresh["refresh_token"] = refresh_token
    if id_token is not None:
        fresh["id_token"] = id_token
    write_secrets(conn, keyring, account_id, fresh)
    notify(conn, TOKENS_CHANNEL, str(account_id))


def reencrypt_all_secrets(conn: Conn, keyring: Keyring) -> int:
    """Re-encrypt every secret not under the current key (`pooler rotate-keys`)."""
    rows = conn.execute(
        "SELECT account_id, kind, key_version, nonce, ciphertext FROM account_secrets"
        " WHERE key_version <> %s FOR UPDATE",
        (keyring.current_version,),
    ).fetchall()
    for account_id, kind, version, nonce, ciphertext in rows:
        value = keyring.decrypt(version, nonce, ciphertext, _aad(account_id, kind)).decode()
        write_secrets(conn, keyring, account_id, {kind: value})
    return len(rows)


def _aad(account_id: UUID, kind: str) -> bytes:
    return f"{account_id}:{kind}".encode()
