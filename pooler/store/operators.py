"""Operators (owners and admins of the instance) and their passwords (scrypt hashes)."""

from __future__ import annotations

from typing import Final

from psycopg.rows import class_row

from pooler.crypto import hash_password, verify_password
from pooler.store.common import (
    ConflictError,
    Conn,
    InvalidInputError,
    check_printable,
    record_change,
)
from pooler.store.models import Operator
from pooler.store.text import findable

ROLES: Final = ("owner", "admin")
MIN_PASSWORD_LEN: Final = 8
OPERATOR_COLUMNS: Final = "id, email, role, status, created_at, last_login_at"


def normalize_email(email: str) -> str:
    email = check_printable(email, "an operator email").strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or len(email) > 254:
        raise InvalidInputError("an operator email looks like name@example.com")
    return email


def create_operator(
    conn: Conn, email: str, password: str, role: str = "admin", *, actor: str = "system"
) -> Operator:
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD_LEN:
        raise InvalidInputError(f"a password has at least {MIN_PASSWORD_LEN} characters")
    cur = conn.cursor(row_factory=class_row(Operator))
    operator = cur.execute(
        "INSERT INTO operators (email, password_hash, role) VALUES (%s, %s, %s)"
        f" ON CONFLICT (email) DO NOTHING RETURNING {OPERATOR_COLUMNS}",
        (email, hash_password(password), role),
    ).fetchone()
    if operator is None:
        raise ConflictError(f"an operator with email {email!r} already exists")
    record_change(
        conn,
        actor=actor,
        action="operator.create",
        target_type="operator",
        target_id=operator.id,
        details={"email": email, "role": role},
    )
    return operator


def create_owner(conn: Conn, email: str, password: str, *, actor: str = "system") -> Operator:
    return create_operator(conn, email, password, "owner", actor=actor)


def list_operators(conn: Conn) -> list[Operator]:
    cur = conn.cursor(row_factory=class_row(Operator))
    return cur.execute(f"SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY email").fetchall()


def verify_operator_password(conn: Conn, email: str, password: str) -> Operator | None:
    """The active operator with this email and password, else None (no side effects)."""
    if not findable(email):
        return None
    row = conn.execute(
        "SELECT password_hash FROM operators WHERE email = %s AND status = 'active'",
        (email.strip().lower(),),
    ).fetchone()
    if row is None or not verify_password(password, row[0]):
        return None
    cur = conn.cursor(row_factory=class_row(Operator))
    return cur.execute(
        f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE email = %s", (email.strip().lower(),)
    ).fetchone()
