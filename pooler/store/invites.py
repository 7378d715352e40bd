"""Onboarding invites: a link (`/onboarding/invites/TOKEN`) with which whoever holds it adds
their ChatGPT account to one Pool by device code, without an operator account.

The token is 32 random bytes, stored as a keyed digest; an invite lives 24 hours, is used
once (when an account is linked) and can be revoked. At most one device sign-in is under way
per invite at a time, and an invite starts at most `MAX_DEVICE_STARTS` of them, so the
public page cannot be made to start sign-ins without bound. Its polls are claimed here
(`claim_poll`): however often the page is loaded, the auth server is asked at most once per
the interval it gave. The device sign-in's id is kept encrypted under the keyring.

This module does no HTTP: the page calls `pooler.upstream.oauth_login` between these steps.
Creating and revoking are audited (`invite.create`, `invite.revoke`); the account a used
invite links is audited by `sign_in.add_signed_in_account`, and the use as `invite.use`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from pooler.crypto import CryptoError, Keyring, key_digest
from pooler.store.audit import record_event
from pooler.store.common import ConflictError, Conn, NotFoundError
from pooler.store.sign_in import SignedInAccount, add_signed_in_account
from pooler.store.text import findable
from pooler.upstream.oauth_login import DeviceSignIn, SignInTokens

INVITE_TTL: Final = timedelta(hours=24)
TOKEN_BYTES: Final = 32
MAX_TOKEN_LEN: Final = 128
# How many device sign-ins one invite may start (each lives up to 15 minutes).
MAX_DEVICE_STARTS: Final = 10
# A start asks the auth server for a code; another start waits this long at most for it.
START_CLAIM: Final = timedelta(seconds=30)
LIST_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class InviteRow:
    """An invite as the operators' list shows it."""

    id: UUID
    pool_id: UUID
    pool_name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    status: str  # pending | used | expired | revoked
    account_label: str | None


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """The device sign-in under way, as the public page shows it (no secret here)."""

    user_code: str
    verification_url: str
    interval_s: float
    expires_at: datetime
    next_poll_at: datetime


@dataclass(frozen=True, slots=True)
class OpenInvite:
    """A usable invite, as its holder's page sees it."""

    id: UUID
    pool_name: str
    expires_at: datetime
    device: PendingDevice | None
    outcome: str | None  # how the last device sign-in ended: denied | expired | failed
    starts_left: int
    starting: bool  # a start is under way


def token_digest(secret_key: bytes, token: str) -> bytes:
    return key_digest(secret_key, "pool-invite:" + token)


def create_invite(
    conn: Conn, secret_key: bytes, pool_id: UUID, *, actor: str
) -> tuple[str, InviteRow]:
    """A new invite to the Pool: (the raw token, shown once in the link; the row)."""
    pool = conn.execute("SELECT name FROM pools WHERE id = %s", (pool_id,)).fetchone()
    if pool is None:
        raise NotFoundError("no such Pool")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = conn.execute(
        "INSERT INTO pool_invites (pool_id, token_digest, created_by, expires_at)"
        " VALUES (%s, %s, %s, now() + %s) RETURNING id",
        (pool_id, token_digest(secret_key, token), actor[:300], INVITE_TTL),
    ).fetchone()
    assert row is not None
    record_event(
        conn,
        actor=actor,
        action="invite.create",
        target_type="invite",
        target_id=row[0],
        details={"pool": pool[0]},
        pool_id=pool_id,
    )
    return token, _rows(conn, None, row[0])[0]


_STATUS_SQL: Final = (
    "CASE WHEN i.revoked_at IS NOT NULL THEN 'revoked' WHEN i.used_at IS NOT NULL THEN 'used'"
    " WHEN i.expires_at <= now() THEN 'expired' ELSE 'pending' END"
)


def _rows(
    conn: Conn,
    pool_ids: frozenset[UUID] | None,
    invite_id: UUID | None,
    limit: int = LIST_LIMIT,
) -> list[InviteRow]:
    rows = conn.execute(
        "SELECT i.id, i.pool_id, p.name, i.created_by, i.created_at, i.expires_at, i.used_at,"
        f" i.revoked_at, {_STATUS_SQL}, a.label FROM pool_invites i"
        " JOIN pools p ON p.id = i.pool_id"
        " LEFT JOIN upstream_accounts a ON a.id = i.used_account_id"
        " WHERE (%s::uuid[] IS NULL OR i.pool_id = ANY(%s::uuid[]))"
        " AND (%s::uuid IS NULL OR i.id = %s::uuid)"
        " ORDER BY i.created_at DESC LIMIT %s",
        (
            *(list(pool_ids) if pool_ids is not None else None,) * 2,
            *(invite_id,) * 2,
            limit,
        ),
    ).fetchall()
    return [InviteRow(*row) for row in rows]


def list_invites(
    conn: Conn, pool_ids: frozenset[UUID] | None, limit: int = LIST_LIMIT
) -> list[InviteRow]:
    """The newest invites (at most `limit`) of the Pools `pool_ids` (None: every Pool)."""
    return _rows(conn, pool_ids, None, limit)


def find_invite(conn: Conn, pool_ids: frozenset[UUID] | None, invite_id: UUID) -> InviteRow | None:
    """The invite, if it is one of the Pools `pool_ids` (None: every Pool)."""
    found = _rows(conn, pool_ids, invite_id, 1)
    return found[0] if found else None


def revoke_invite(
    conn: Conn, invite_id: UUID, pool_ids: frozenset[UUID] | None, *, actor: str
) -> None:
    """Revoke a pending invite of one of `pool_ids` (None: any). NotFoundError for an invite
    the operator may not see; ConflictError for one already used, expired or revoked."""
    row = conn.execute(
        "SELECT i.pool_id, p.name, i.revoked_at IS NULL AND i.used_at IS NULL"
        " AND i.expires_at > now() FROM pool_invites i JOIN pools p ON p.id = i.pool_id"
        " WHERE i.id = %s FOR UPDATE OF i",
        (invite_id,),
    ).fetchone()
    if row is None or (pool_ids is not None and row[0] not in pool_ids):
        raise NotFoundError("no such invite")
    if not row[2]:
        raise ConflictError("this invite is already used, expired or revoked")
    conn.execute(
        "UPDATE pool_invites SET revoked_at = now(), " + _NO_DEVICE + " WHERE id = %s",
        (invite_id,),
    )
    record_event(
        conn,
        actor=actor,
        action="invite.revoke",
        target_type="invite",
        target_id=invite_id,
        details={"pool": row[1]},
        pool_id=row[0],
    )


_NO_DEVICE: Final = (
    "device_user_code = NULL, device_verification_url = NULL, device_interval_s = NULL,"
    " device_expires_at = NULL, device_next_poll_at = NULL, device_key_version = NULL,"
    " device_nonce = NULL, device_ciphertext = NULL, device_claimed_until = NULL"
)
_USABLE: Final = "revoked_at IS NULL AND used_at IS NULL AND expires_at > now()"
_USABLE_I: Final = "i.revoked_at IS NULL AND i.used_at IS NULL AND i.expires_at > now()"


def open_invite(conn: Conn, secret_key: bytes, token: str) -> OpenInvite | None:
    """The usable invite of `token`, else None (unknown, used, expired or revoked alike).
    A device sign-in past its expiry is ended here (outcome `expired`)."""
    if not token or len(token) > MAX_TOKEN_LEN or not findable(token):
        return None
    row = conn.execute(
        "SELECT i.id, p.name, i.expires_at, i.device_user_code, i.device_verification_url,"
        " i.device_interval_s, i.device_expires_at, i.device_next_poll_at,"
        " i.device_expires_at <= now(), i.device_outcome, i.device_starts,"
        " COALESCE(i.device_claimed_until > now(), false)"
        " FROM pool_invites i JOIN pools p ON p.id = i.pool_id"
        f" WHERE i.token_digest = %s AND {_USABLE_I}",
        (token_digest(secret_key, token),),
    ).fetchone()
    if row is None:
        return None
    invite_id, pool_name, expires_at, code, url, interval, dev_expires, next_poll = row[:8]
    dev_expired, outcome, starts, starting = row[8:]
    device = None
    if code is not None and dev_expired:
        end_device(conn, invite_id, "expired")
        outcome = "expired"
    elif code is not None:
        device = PendingDevice(code, url, interval, dev_expires, next_poll)
    return OpenInvite(
        invite_id,
        pool_name,
        expires_at,
        device,
        outcome,
        max(0, MAX_DEVICE_STARTS - starts),
        starting,
    )


def claim_device_start(conn: Conn, invite_id: UUID) -> bool:
    """Whether this caller may start a device sign-in for the invite now: it is usable,
    none is under way or being started, and it has starts left. The claim lasts
    START_CLAIM (or until `save_device` / `end_device`)."""
    row = conn.execute(
        "UPDATE pool_invites SET device_claimed_until = now() + %s,"
        " device_starts = device_starts + 1, device_outcome = NULL"
        f" WHERE id = %s AND {_USABLE} AND device_starts < %s"
        " AND (device_expires_at IS NULL OR device_expires_at <= now())"
        " AND (device_claimed_until IS NULL OR device_claimed_until <= now()) RETURNING id",
        (START_CLAIM, invite_id, MAX_DEVICE_STARTS),
    ).fetchone()
    return row is not None


def _aad(invite_id: UUID) -> bytes:
    return f"pool-invite-device:{invite_id}".encode()


def save_device(conn: Conn, keyring: Keyring, invite_id: UUID, device: DeviceSignIn) -> None:
    """Keep the started device sign-in (its id encrypted) with its first poll due after the
    server's interval."""
    version, nonce, ciphertext = keyring.encrypt(device.device_auth_id.encode(), _aad(invite_id))
    conn.execute(
        "UPDATE pool_invites SET device_user_code = %s, device_verification_url = %s,"
        " device_interval_s = %s, device_expires_at = %s,"
        " device_next_poll_at = now() + make_interval(secs => %s), device_key_version = %s,"
        " device_nonce = %s, device_ciphertext = %s, device_claimed_until = NULL,"
        " device_outcome = NULL WHERE id = %s",
        (
            device.user_code,
            device.verification_url,
            device.interval,
            device.expires_at,
            device.interval,
            version,
            nonce,
            ciphertext,
            invite_id,
        ),
    )


def end_device(conn: Conn, invite_id: UUID, outcome: str | None) -> None:
    """Forget the device sign-in (and a start claim) of the invite, keeping `outcome`."""
    conn.execute(
        f"UPDATE pool_invites SET {_NO_DEVICE}, device_outcome = %s WHERE id = %s",
        (outcome, invite_id),
    )


def claim_poll(conn: Conn, keyring: Keyring, invite_id: UUID) -> DeviceSignIn | None:
    """The invite's device sign-in if a poll is due now, moving its next poll on by the
    server's interval (so concurrent page loads poll once); else None."""
    row = conn.execute(
        "UPDATE pool_invites SET device_next_poll_at = now() + make_interval(secs =>"
        f" device_interval_s) WHERE id = %s AND {_USABLE} AND device_ciphertext IS NOT NULL"
        " AND device_next_poll_at <= now() AND device_expires_at > now()"
        " RETURNING device_user_code, device_verification_url, device_interval_s,"
        " device_expires_at, device_key_version, device_nonce, device_ciphertext",
        (invite_id,),
    ).fetchone()
    if row is None:
        return None
    code, url, interval, expires_at, version, nonce, ciphertext = row
    try:
        device_auth_id = keyring.decrypt(version, nonce, ciphertext, _aad(invite_id)).decode()
    except CryptoError:
        end_device(conn, invite_id, "failed")  # a key no longer in the keyring
        return None
    return DeviceSignIn(code, url, interval, expires_at, device_auth_id)


def use_invite(
    conn: Conn, keyring: Keyring, invite_id: UUID, tokens: SignInTokens
) -> SignedInAccount | None:
    """Link the signed-in account to the invite's Pool and use the invite up; None (nothing
    added) if it was revoked or expired meanwhile."""
    row = conn.execute(
        "SELECT p.name, p.id FROM pool_invites i JOIN pools p ON p.id = i.pool_id"
        f" WHERE i.id = %s AND {_USABLE_I} FOR UPDATE OF i",
        (invite_id,),
    ).fetchone()
    if row is None:
        return None
    actor = f"invite {invite_id}"
    linked = add_signed_in_account(conn, keyring, row[0], tokens, method="device_code", actor=actor)
    conn.execute(
        f"UPDATE pool_invites SET used_at = now(), used_account_id = %s, {_NO_DEVICE},"
        " device_outcome = NULL WHERE id = %s",
        (linked.account.id, invite_id),
    )
    record_event(
        conn,
        actor=actor,
        action="invite.use",
        target_type="invite",
        target_id=invite_id,
        details={"pool": row[0], "account": str(linked.account.id), "created": linked.created},
        pool_id=row[1],
    )
    return linked
