"""The console's account sign-ins under way (browser PKCE and device code), in PostgreSQL so
that any gateway node on the database can continue one and a restart loses none.

A sign-in belongs to the console session that started it: every read and change names the
session, and another session (even of the same operator) finds nothing. It lives
`SIGN_IN_TTL` (a device sign-in: until its code expires), plus `OVER_SHOWN` to say how it
ended. Bounded without a cleanup job: `start` deletes every expired row (anyone's) and keeps
at most `MAX_PER_SESSION` per session, dropping the oldest.

Secrets: a browser sign-in's authorize URL, `state` and PKCE verifier, and a device sign-in's
id, are AES-256-GCM ciphertext under the instance keyring, the AAD binding them to the row
and its session. Once the sign-in is over (`finish`, `fail`) they are wiped and only the
outcome stays. A device sign-in's polls are claimed (`claim_poll`): however often, and on
however many nodes, its page is loaded, the auth server is asked at most once per the
interval it gave.

No HTTP here: the console page calls `pooler.upstream.oauth_login` between these steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

from pooler.crypto import CryptoError, Keyring
from pooler.store.common import Conn
from pooler.upstream.oauth_login import BrowserSignIn, DeviceSignIn

SIGN_IN_TTL: Final = timedelta(minutes=15)
# How long a sign-in past its time is still shown, to say that it expired.
OVER_SHOWN: Final = timedelta(minutes=2)
MAX_PER_SESSION: Final = 4
MAX_ERROR_CHARS: Final = 1000
DEVICE_EXPIRED: Final = "The device code expired before the sign-in was done; start again."
KEY_GONE: Final = "This sign-in can no longer be read (the instance key changed); start again."


@dataclass(frozen=True, slots=True)
class DeviceShown:
    """A device sign-in's public part, as its page shows it (no secret here)."""

    user_code: str
    verification_url: str
    interval: float
    expires_at: datetime


@dataclass(slots=True)
class ConsoleSignIn:
    """One sign-in for the Pool (`pool_id`, `pool_name`), re-linking `relink` when set.
    `browser` holds its secrets (decrypted) while it is under way."""

    id: UUID
    session_id: UUID
    pool_id: UUID
    pool_name: str
    relink: UUID | None
    kind: str  # browser | device
    expires_at: datetime
    browser: BrowserSignIn | None
    device: DeviceShown | None
    next_poll_at: datetime | None
    account_id: UUID | None
    created: bool
    error: str | None

    @property
    def finished(self) -> bool:
        return self.account_id is not None or self.error is not None


def _aad(sign_in_id: UUID, session_id: UUID) -> bytes:
    return f"console-sign-in:{sign_in_id}:{session_id}".encode()


def _browser_plaintext(sign_in: BrowserSignIn) -> bytes:
    return json.dumps(
        {
            "authorize_url": sign_in.authorize_url,
            "state": sign_in.state,
            "code_verifier": sign_in.code_verifier,
            "redirect_uri": sign_in.redirect_uri,
        }
    ).encode()


def _browser_of(plaintext: bytes) -> BrowserSignIn:
    found = json.loads(plaintext)
    return BrowserSignIn(
        found["authorize_url"], found["state"], found["code_verifier"], found["redirect_uri"]
    )


def start(
    conn: Conn,
    keyring: Keyring,
    session_id: UUID,
    pool_id: UUID,
    relink: UUID | None,
    sign_in: BrowserSignIn | DeviceSignIn,
    *,
    per_session: int = MAX_PER_SESSION,
) -> UUID:
    """Keep a started sign-in; its id (random, for the page's URL)."""
    # Starts of one session wait for each other here, so the bound below holds.
    conn.execute("SELECT 1 FROM console_sessions WHERE id = %s FOR NO KEY UPDATE", (session_id,))
    conn.execute("DELETE FROM console_sign_ins WHERE expires_at <= now()")
    conn.execute(
        "DELETE FROM console_sign_ins WHERE id IN (SELECT id FROM console_sign_ins"
        " WHERE session_id = %s ORDER BY created_at DESC, id OFFSET %s)",
        (session_id, max(0, per_session - 1)),
    )
    sign_in_id = uuid4()
    aad = _aad(sign_in_id, session_id)
    if isinstance(sign_in, BrowserSignIn):
        version, nonce, ciphertext = keyring.encrypt(_browser_plaintext(sign_in), aad)
        conn.execute(
            "INSERT INTO console_sign_ins (id, session_id, pool_id, relink_account_id, kind,"
            " expires_at, key_version, nonce, ciphertext)"
            " VALUES (%s, %s, %s, %s, 'browser', now() + %s, %s, %s, %s)",
            (sign_in_id, session_id, pool_id, relink, SIGN_IN_TTL, version, nonce, ciphertext),
        )
        return sign_in_id
    version, nonce, ciphertext = keyring.encrypt(sign_in.device_auth_id.encode(), aad)
    conn.execute(
        "INSERT INTO console_sign_ins (id, session_id, pool_id, relink_account_id, kind,"
        " expires_at, key_version, nonce, ciphertext, device_user_code,"
        " device_verification_url, device_interval_s, device_expires_at, next_poll_at)"
        " VALUES (%s, %s, %s, %s, 'device', least(now() + %s, %s) + %s, %s, %s, %s, %s, %s,"
        " %s, %s, now() + make_interval(secs => %s))",
        (
            sign_in_id,
            session_id,
            pool_id,
            relink,
            SIGN_IN_TTL,
            sign_in.expires_at,
            OVER_SHOWN,
            version,
            nonce,
            ciphertext,
            sign_in.user_code,
            sign_in.verification_url,
            sign_in.interval,
            sign_in.expires_at,
            sign_in.interval,
        ),
    )
    return sign_in_id


_COLUMNS: Final = (
    "s.id, s.session_id, s.pool_id, p.name, s.relink_account_id, s.kind, s.expires_at,"
    " s.key_version, s.nonce, s.ciphertext, s.device_user_code, s.device_verification_url,"
    " s.device_interval_s, s.device_expires_at, s.next_poll_at, s.account_id, s.created,"
    " s.error, s.device_expires_at <= now()"
)


def get(conn: Conn, keyring: Keyring, sign_in_id: UUID, session_id: UUID) -> ConsoleSignIn | None:
    """The session's sign-in, else None (unknown, another session's, or past its time).
    A device sign-in past its code's expiry is ended here (the error says so)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM console_sign_ins s JOIN pools p ON p.id = s.pool_id"
        " WHERE s.id = %s AND s.session_id = %s AND s.expires_at > now()",
        (sign_in_id, session_id),
    ).fetchone()
    if row is None:
        return None
    found = _sign_in(row)
    if found.finished:
        return found
    if found.kind == "device" and row[-1]:
        return _failed(conn, found, DEVICE_EXPIRED)
    if found.kind == "browser":
        try:
            plaintext = keyring.decrypt(row[7], row[8], row[9], _aad(found.id, session_id))
        except CryptoError:
            return _failed(conn, found, KEY_GONE)
        found.browser = _browser_of(plaintext)
    return found


def _sign_in(row: Any) -> ConsoleSignIn:
    (sign_in_id, session_id, pool_id, pool_name, relink, kind, expires_at) = row[:7]
    code, url, interval, device_expires, next_poll, account_id, created, error = row[10:18]
    device = DeviceShown(code, url, interval, device_expires) if kind == "device" else None
    return ConsoleSignIn(
        sign_in_id,
        session_id,
        pool_id,
        pool_name,
        relink,
        kind,
        expires_at,
        None,
        device,
        next_poll,
        account_id,
        bool(created),
        error,
    )


def _failed(conn: Conn, found: ConsoleSignIn, message: str) -> ConsoleSignIn:
    fail(conn, found.id, found.session_id, message)
    found.error = message
    return found


_OPEN: Final = "id = %s AND session_id = %s AND ciphertext IS NOT NULL AND expires_at > now()"
_WIPE: Final = "key_version = NULL, nonce = NULL, ciphertext = NULL"


def claim_poll(
    conn: Conn, keyring: Keyring, sign_in_id: UUID, session_id: UUID
) -> DeviceSignIn | None:
    """The session's device sign-in if a poll is due now, moving its next poll on by the
    server's interval (so concurrent page loads, on any node, poll once); else None."""
    row = conn.execute(
        "UPDATE console_sign_ins SET next_poll_at = now() + make_interval(secs =>"
        f" device_interval_s) WHERE {_OPEN} AND kind = 'device' AND next_poll_at <= now()"
        " AND device_expires_at > now() RETURNING device_user_code, device_verification_url,"
        " device_interval_s, device_expires_at, key_version, nonce, ciphertext",
        (sign_in_id, session_id),
    ).fetchone()
    if row is None:
        return None
    code, url, interval, expires_at, version, nonce, ciphertext = row
    try:
        device_auth_id = keyring.decrypt(
            version, nonce, ciphertext, _aad(sign_in_id, session_id)
        ).decode()
    except CryptoError:
        fail(conn, sign_in_id, session_id, KEY_GONE)
        return None
    return DeviceSignIn(code, url, interval, expires_at, device_auth_id)


def finish(conn: Conn, sign_in_id: UUID, session_id: UUID, account_id: UUID, created: bool) -> bool:
    """End the sign-in with the account it added (`created`) or re-linked, wiping its
    secrets; False if it was already over (or is gone)."""
    row = conn.execute(
        f"UPDATE console_sign_ins SET {_WIPE}, account_id = %s, created = %s WHERE {_OPEN}"
        " RETURNING id",
        (account_id, created, sign_in_id, session_id),
    ).fetchone()
    return row is not None


def fail(conn: Conn, sign_in_id: UUID, session_id: UUID, message: str) -> bool:
    """End the sign-in with `message` (shown on its page), wiping its secrets; False if it
    was already over (or is gone)."""
    row = conn.execute(
        f"UPDATE console_sign_ins SET {_WIPE}, error = %s WHERE {_OPEN} RETURNING id",
        (message[:MAX_ERROR_CHARS], sign_in_id, session_id),
    ).fetchone()
    return row is not None


def drop(conn: Conn, sign_in_id: UUID, session_id: UUID) -> None:
    """Forget the session's sign-in (cancelled)."""
    conn.execute(
        "DELETE FROM console_sign_ins WHERE id = %s AND session_id = %s",
        (sign_in_id, session_id),
    )
