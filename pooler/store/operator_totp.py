"""An operator's second factor: the TOTP secret (AES-256-GCM under the instance keyring, like
upstream tokens; re-encrypted under the current key when next used), codes accepted once
(the last accepted time step is kept, so a code, or an older one, is refused after), and
recovery codes (keyed digests, single use). Enrolment is two steps: `begin_totp` stores a
pending secret, `enable_totp` turns it on once a code from it is confirmed.
"""

from __future__ import annotations

from uuid import UUID

from pooler import totp
from pooler.crypto import CryptoError, Keyring, key_digest
from pooler.store.audit import record_event
from pooler.store.common import Conn, InvalidInputError, NotFoundError


def _aad(operator_id: UUID | str) -> bytes:
    return f"operator-totp:{operator_id}".encode()


def _store_secret(conn: Conn, keyring: Keyring, operator_id: UUID | str, secret: str) -> None:
    version, nonce, ciphertext = keyring.encrypt(secret.encode(), _aad(operator_id))
    conn.execute(
        "UPDATE operators SET totp_key_version = %s, totp_nonce = %s, totp_ciphertext = %s"
        " WHERE id = %s",
        (version, nonce, ciphertext, str(operator_id)),
    )


def _load_secret(
    conn: Conn, keyring: Keyring, operator_id: UUID | str, *, lock: bool = False
) -> tuple[str, bool, int | None] | None:
    """(secret, enabled, last accepted step), or None when there is no secret."""
    row = conn.execute(
        "SELECT totp_key_version, totp_nonce, totp_ciphertext, totp_enabled_at IS NOT NULL,"
        " totp_last_step FROM operators WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        (str(operator_id),),
    ).fetchone()
    if row is None or row[2] is None:
        return None
    version, nonce, ciphertext, enabled, last_step = row
    try:
        secret = keyring.decrypt(version, nonce, ciphertext, _aad(operator_id)).decode()
    except CryptoError:
        return None  # a key no longer in the keyring: as if never enrolled (the owner resets)
    if keyring.needs_reencrypt(version):
        _store_secret(conn, keyring, operator_id, secret)
    return secret, bool(enabled), last_step


def begin_totp(conn: Conn, keyring: Keyring, operator_id: UUID) -> str:
    """The pending secret to show as a QR code (a new one unless one is pending already).
    Refused while TOTP is on (disable it first)."""
    found = _load_secret(conn, keyring, operator_id, lock=True)
    if found is not None and found[1]:
        raise InvalidInputError("two-factor sign-in is already on")
    if found is not None:
        return found[0]
    secret = totp.new_secret()
    _store_secret(conn, keyring, operator_id, secret)
    return secret


def pending_secret(conn: Conn, keyring: Keyring, operator_id: UUID) -> str | None:
    found = _load_secret(conn, keyring, operator_id)
    return found[0] if found is not None and not found[1] else None


def enable_totp(
    conn: Conn,
    keyring: Keyring,
    secret_key: bytes,
    operator_id: UUID,
    code: str,
    now: float,
    *,
    actor: str,
) -> list[str] | None:
    """Turn TOTP on if `code` matches the pending secret: the new recovery codes (shown
    once), else None."""
    found = _load_secret(conn, keyring, operator_id, lock=True)
    if found is None or found[1]:
        raise InvalidInputError("start the set-up again")
    step = totp.matching_step(found[0], code, now)
    if step is None:
        return None
    conn.execute(
        "UPDATE operators SET totp_enabled_at = now(), totp_last_step = %s WHERE id = %s",
        (step, operator_id),
    )
    codes = _replace_recovery_codes(conn, secret_key, operator_id)
    record_event(
        conn,
        actor=actor,
        action="operator.totp_enable",
        target_type="operator",
        target_id=operator_id,
    )
    return codes


def disable_totp(conn: Conn, operator_id: UUID, *, actor: str) -> None:
    row = conn.execute(
        "UPDATE operators SET totp_key_version = NULL, totp_nonce = NULL,"
        " totp_ciphertext = NULL, totp_enabled_at = NULL, totp_last_step = NULL"
        " WHERE id = %s RETURNING id",
        (operator_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError("operator not found")
    conn.execute("DELETE FROM operator_recovery_codes WHERE operator_id = %s", (operator_id,))
    record_event(
        conn,
        actor=actor,
        action="operator.totp_disable",
        target_type="operator",
        target_id=operator_id,
    )


def check_totp_code(conn: Conn, keyring: Keyring, operator_id: UUID, code: str, now: float) -> bool:
    """Whether `code` is a current code of the operator's enabled TOTP that was not
    accepted before; an accepted one is remembered (with every earlier step)."""
    found = _load_secret(conn, keyring, operator_id, lock=True)
    if found is None or not found[1]:
        return False
    secret, _, last_step = found
    step = totp.matching_step(secret, code, now)
    if step is None or (last_step is not None and step <= last_step):
        return False
    conn.execute("UPDATE operators SET totp_last_step = %s WHERE id = %s", (step, operator_id))
    return True


def _recovery_digest(secret_key: bytes, code: str) -> bytes:
    return key_digest(secret_key, "operator-recovery:" + totp.normalize_code(code))


def _replace_recovery_codes(conn: Conn, secret_key: bytes, operator_id: UUID) -> list[str]:
    conn.execute("DELETE FROM operator_recovery_codes WHERE operator_id = %s", (operator_id,))
    codes = totp.new_recovery_codes()
    for code in codes:
        conn.execute(
            "INSERT INTO operator_recovery_codes (operator_id, code_digest) VALUES (%s, %s)",
            (operator_id, _recovery_digest(secret_key, code)),
        )
    return codes


def regenerate_recovery_codes(
    conn: Conn, secret_key: bytes, operator_id: UUID, *, actor: str
) -> list[str]:
    """New recovery codes (the old ones stop working); refused without TOTP on."""
    enabled = conn.execute(
        "SELECT totp_enabled_at IS NOT NULL FROM operators WHERE id = %s", (operator_id,)
    ).fetchone()
    if not enabled or not enabled[0]:
        raise InvalidInputError("recovery codes come with two-factor sign-in: turn it on first")
    codes = _replace_recovery_codes(conn, secret_key, operator_id)
    record_event(
        conn,
        actor=actor,
        action="operator.recovery_codes_regenerate",
        target_type="operator",
        target_id=operator_id,
    )
    return codes


def unused_recovery_codes(conn: Conn, operator_id: UUID) -> int:
    row = conn.execute(
        "SELECT count(*) FROM operator_recovery_codes WHERE operator_id = %s AND used_at IS NULL",
        (operator_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def use_recovery_code(
    conn: Conn, secret_key: bytes, operator_id: UUID, code: str, *, actor: str, ip: str
) -> bool:
    """Spend one unused recovery code (audited); False if `code` is none of them."""
    if not totp.looks_like_recovery_code(code):
        return False
    row = conn.execute(
        "UPDATE operator_recovery_codes SET used_at = now() WHERE operator_id = %s"
        " AND code_digest = %s AND used_at IS NULL RETURNING id",
        (operator_id, _recovery_digest(secret_key, code)),
    ).fetchone()
    if row is None:
        return False
    record_event(
        conn,
        actor=actor,
        action="operator.recovery_code_used",
        target_type="operator",
        target_id=operator_id,
        details={"ip": ip, "left": unused_recovery_codes(conn, operator_id)},
    )
    return True
