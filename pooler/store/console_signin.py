"""Signing in to the console: the password step, its throttling, and what is audited.

Throttling (beyond the reference, which has none). Failures are counted per account (a
keyed digest of the typed email, whether or not such an operator exists, so the answer
says nothing about it) and per client IP, in `console_signin_failures`, shared by every
node on the database. After `FREE_FAILURES` a subject is blocked for a delay that doubles
with each further failure: up to `ACCOUNT_CAP_S` for an account, so an attacker can slow
the owner to one try every half minute but never lock them out; up to `IP_CAP_S` for an
address. A blocked attempt is refused before any password is checked (and is not counted,
so a block cannot be stretched by hammering). A count starts again after an hour without
failures; a success clears the account's count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from pooler.crypto import Keyring, key_digest
from pooler.store import operator_totp
from pooler.store.audit import record_event
from pooler.store.common import Conn
from pooler.store.console_sessions import (
    ConsoleSession,
    create_session,
    delete_expired_sessions,
    end_session_of_token,
)
from pooler.store.models import Operator
from pooler.store.operators import authenticate

FREE_FAILURES: Final = 3
ACCOUNT_CAP_S: Final = 30.0
IP_CAP_S: Final = 900.0
FORGET_AFTER: Final = timedelta(hours=1)


def delay_after(failures: int, cap_s: float) -> float:
    """Seconds a subject is blocked after its `failures`-th failure: none for the first
    FREE_FAILURES, then 1, 2, 4, ... up to `cap_s`. Pure."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(cap_s, 2.0 ** (failures - FREE_FAILURES - 1))


@dataclass(frozen=True, slots=True)
class SignIn:
    """What the password step came to. `kind`: 'signed_in' (token for the cookie), 'totp'
    (a token for the code step only), 'failed' or 'throttled' (retry after)."""

    kind: str
    token: str | None = None
    session: ConsoleSession | None = None
    operator: Operator | None = None
    retry_after_s: float = 0.0

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"SignIn(kind={self.kind!r}, retry_after_s={self.retry_after_s})"


def _subjects(secret_key: bytes, email: str, ip: str) -> list[tuple[str, bytes]]:
    return [
        ("account", key_digest(secret_key, "console-account:" + email.strip().lower())),
        ("ip", key_digest(secret_key, "console-ip:" + ip)),
    ]


def blocked_for(conn: Conn, secret_key: bytes, email: str, ip: str) -> float:
    """Seconds until this email and address may try again (0: now)."""
    subjects = _subjects(secret_key, email, ip)
    row = conn.execute(
        "SELECT extract(epoch FROM max(blocked_until) - now()) FROM console_signin_failures"
        " WHERE blocked_until > now() AND ((scope = %s AND subject = %s)"
        " OR (scope = %s AND subject = %s))",
        (*subjects[0], *subjects[1]),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def record_failure(conn: Conn, secret_key: bytes, email: str, ip: str) -> float:
    """Count a failure for both subjects; the longer of their new delays."""
    longest = 0.0
    for (scope, subject), cap in zip(
        _subjects(secret_key, email, ip), (ACCOUNT_CAP_S, IP_CAP_S), strict=True
    ):
        row = conn.execute(
            "INSERT INTO console_signin_failures AS f (scope, subject, failures)"
            " VALUES (%s, %s, 1) ON CONFLICT (scope, subject) DO UPDATE SET"
            " failures = CASE WHEN f.last_failure_at < now() - %s THEN 1"
            " ELSE f.failures + 1 END, last_failure_at = now() RETURNING failures",
            (scope, subject, FORGET_AFTER),
        ).fetchone()
        assert row is not None
        delay = delay_after(int(row[0]), cap)
        conn.execute(
            "UPDATE console_signin_failures SET blocked_until = now() + %s"
            " WHERE scope = %s AND subject = %s",
            (timedelta(seconds=delay), scope, subject),
        )
        longest = max(longest, delay)
    return longest


def clear_account_failures(conn: Conn, secret_key: bytes, email: str) -> None:
    (scope, subject), _ = _subjects(secret_key, email, "")
    conn.execute(
        "DELETE FROM console_signin_failures WHERE scope = %s AND subject = %s", (scope, subject)
    )


def forget_stale(conn: Conn) -> None:
    """Drop expired sessions and failure counts nobody remembers any more (both indexed;
    done at each successful sign-in, so no job is needed)."""
    delete_expired_sessions(conn)
    conn.execute(
        "DELETE FROM console_signin_failures WHERE last_failure_at < now() - %s"
        " AND blocked_until < now()",
        (FORGET_AFTER,),
    )


def sign_in_with_password(
    conn: Conn,
    secret_key: bytes,
    email: str,
    password: str,
    *,
    ip: str,
    user_agent: str | None,
    replaces: str | None = None,
) -> SignIn:
    """The password step, throttled and audited, in one transaction. Never raises for a
    wrong email or password: a failure and a throttled attempt come back as such. On
    success a new session is made and the one of the token `replaces` (the browser's
    previous cookie, if any) ends."""
    wait = blocked_for(conn, secret_key, email, ip)
    if wait > 0:
        _audit_failure(conn, None, ip, "throttled")
        return SignIn("throttled", retry_after_s=math.ceil(wait))
    operator = authenticate(conn, email, password)
    if operator is None:
        delay = record_failure(conn, secret_key, email, ip)
        _audit_failure(conn, None, ip, "bad_credentials")
        return SignIn("failed", retry_after_s=math.ceil(delay))
    clear_account_failures(conn, secret_key, operator.email)
    forget_stale(conn)
    if replaces:
        end_session_of_token(conn, secret_key, replaces)
    stage = "totp" if operator.totp_enabled else "full"
    token, session = create_session(
        conn, secret_key, operator.id, ip=ip, user_agent=user_agent, stage=stage
    )
    if stage == "full":
        audit_sign_in(conn, operator, ip, "password")
    return SignIn("signed_in" if stage == "full" else "totp", token, session, operator, 0.0)


def sign_in_second_factor(
    conn: Conn,
    secret_key: bytes,
    keyring: Keyring,
    pending: ConsoleSession,
    operator: Operator,
    code: str,
    *,
    ip: str,
    user_agent: str | None,
    now: float,
) -> SignIn:
    """The TOTP step of a 'totp' session: a current, unused code or an unused recovery code
    ends the pending session and opens a full one (a new token); throttled like passwords."""
    wait = blocked_for(conn, secret_key, operator.email, ip)
    if wait > 0:
        _audit_failure(conn, operator, ip, "throttled")
        return SignIn("throttled", retry_after_s=math.ceil(wait))
    if operator_totp.check_totp_code(conn, keyring, operator.id, code, now):
        method = "totp"
    elif operator_totp.use_recovery_code(
        conn, secret_key, operator.id, code, actor=operator.email, ip=ip
    ):
        method = "recovery_code"
    else:
        delay = record_failure(conn, secret_key, operator.email, ip)
        _audit_failure(conn, operator, ip, "bad_code")
        return SignIn("failed", retry_after_s=math.ceil(delay))
    clear_account_failures(conn, secret_key, operator.email)
    conn.execute("DELETE FROM console_sessions WHERE id = %s", (pending.id,))
    token, session = create_session(conn, secret_key, operator.id, ip=ip, user_agent=user_agent)
    audit_sign_in(conn, operator, ip, method)
    return SignIn("signed_in", token, session, operator)


def audit_sign_in(conn: Conn, operator: Operator, ip: str, method: str) -> None:
    record_event(
        conn,
        actor=operator.email,
        action="console.sign_in",
        target_type="operator",
        target_id=operator.id,
        details={"ip": ip, "method": method},
    )


def _audit_failure(conn: Conn, operator: Operator | None, ip: str, reason: str) -> None:
    # The typed email is not recorded: it may be a password typed in the wrong field.
    record_event(
        conn,
        actor=operator.email if operator else "anonymous",
        action="console.sign_in_failed",
        target_type="operator",
        target_id=operator.id if operator else "unknown",
        details={"ip": ip, "reason": reason},
        outcome="refused" if reason == "throttled" else "failed",
    )


def sign_out(conn: Conn, session: ConsoleSession, operator: Operator, ip: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE id = %s", (session.id,))
    record_event(
        conn,
        actor=operator.email,
        action="console.sign_out",
        target_type="operator",
        target_id=operator.id,
        details={"ip": ip},
    )
