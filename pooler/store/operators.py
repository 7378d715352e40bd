"""Operators (owners and admins of the instance), their passwords (argon2id; scrypt hashes of
earlier versions verify and are replaced at the next sign-in) and the Pools an admin sees.

Every password that is set passes `pooler.password_policy` (12-128 characters, not a common
one). Sign-in checks live in `console_signin`; this module owns the operator rows.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.crypto import hash_password, password_needs_rehash, verify_password
from pooler.password_policy import MIN_PASSWORD_LEN, PasswordRefused, check_password
from pooler.store.common import (
    ConflictError,
    Conn,
    InvalidInputError,
    NotFoundError,
    changed_values,
    check_printable,
    record_change,
)
from pooler.store.models import Operator
from pooler.store.text import findable

__all__ = ["MIN_PASSWORD_LEN"]

ROLES: Final = ("owner", "admin")
MAX_DISPLAY_NAME_LEN: Final = 100
OPERATOR_COLUMNS: Final = (
    "id, email, role, status, created_at, last_login_at, display_name,"
    " must_change_password, totp_enabled_at IS NOT NULL AS totp_enabled, password_changed_at"
)
# Serializes bootstraps: two first visits at once make one owner.
_BOOTSTRAP_LOCK: Final = 0x706F6F6C626F6F74


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a wrong email costs what a wrong
    password does (the answer's timing does not say whether the account exists)."""
    return hash_password("not the password of anyone: timing only")


def normalize_email(email: str) -> str:
    email = check_printable(email, "an operator email").strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or len(email) > 254:
        raise InvalidInputError("an operator email looks like name@example.com")
    return email


def checked_password(password: str) -> str:
    """`password` if the policy takes it, else InvalidInputError saying why."""
    try:
        return check_password(password)
    except PasswordRefused as exc:
        raise InvalidInputError(str(exc)) from None


def checked_display_name(name: str) -> str:
    name = check_printable(name, "a display name").strip()
    if len(name) > MAX_DISPLAY_NAME_LEN:
        raise InvalidInputError(f"a display name has at most {MAX_DISPLAY_NAME_LEN} characters")
    return name


def create_operator(
    conn: Conn,
    email: str,
    password: str,
    role: str = "admin",
    *,
    display_name: str = "",
    must_change_password: bool = False,
    actor: str = "system",
) -> Operator:
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    email = normalize_email(email)
    display_name = checked_display_name(display_name)
    encoded = hash_password(checked_password(password))
    cur = conn.cursor(row_factory=class_row(Operator))
    operator = cur.execute(
        "INSERT INTO operators (email, password_hash, role, display_name,"
        " must_change_password, password_changed_at) VALUES (%s, %s, %s, %s, %s, now())"
        f" ON CONFLICT (email) DO NOTHING RETURNING {OPERATOR_COLUMNS}",
        (email, encoded, role, display_name, must_change_password),
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


def create_owner(
    conn: Conn, email: str, password: str, *, display_name: str = "", actor: str = "system"
) -> Operator:
    return create_operator(conn, email, password, "owner", display_name=display_name, actor=actor)


def owner_exists(conn: Conn) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM operators WHERE role = 'owner')").fetchone()
    return bool(row and row[0])


def bootstrap_owner(conn: Conn, email: str, display_name: str, password: str) -> Operator:
    """The instance's first owner; NotFoundError once any owner exists (the page is gone)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK,))
    if owner_exists(conn):
        raise NotFoundError("the instance already has an owner")
    return create_owner(conn, email, password, display_name=display_name, actor="bootstrap")


def list_operators(conn: Conn) -> list[Operator]:
    cur = conn.cursor(row_factory=class_row(Operator))
    return cur.execute(f"SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY email").fetchall()


def get_operator(conn: Conn, operator_id: UUID | str) -> Operator:
    cur = conn.cursor(row_factory=class_row(Operator))
    found = cur.execute(
        f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = %s", (str(operator_id),)
    ).fetchone()
    if found is None:
        raise NotFoundError("operator not found")
    return found


def verify_operator_password(conn: Conn, email: str, password: str) -> Operator | None:
    """The active operator with this email and password, else None (no side effects)."""
    found = _password_row(conn, email)
    if found is None:
        verify_password(password, _dummy_hash())
        return None
    operator_id, encoded = found
    if not verify_password(password, encoded):
        return None
    return get_operator(conn, operator_id)


def authenticate(conn: Conn, email: str, password: str) -> Operator | None:
    """Like `verify_operator_password`, and on success records the sign-in time and
    replaces a hash of an older scheme or cost with argon2id (the password is known now)."""
    found = _password_row(conn, email)
    if found is None:
        verify_password(password, _dummy_hash())
        return None
    operator_id, encoded = found
    if not verify_password(password, encoded):
        return None
    if password_needs_rehash(encoded):
        conn.execute(
            "UPDATE operators SET password_hash = %s WHERE id = %s",
            (hash_password(password), operator_id),
        )
    conn.execute("UPDATE operators SET last_login_at = now() WHERE id = %s", (operator_id,))
    return get_operator(conn, operator_id)


def _password_row(conn: Conn, email: str) -> tuple[UUID, str] | None:
    if not findable(email):
        return None
    row = conn.execute(
        "SELECT id, password_hash FROM operators WHERE email = %s AND status = 'active'",
        (email.strip().lower(),),
    ).fetchone()
    return (row[0], row[1]) if row else None


def set_password(
    conn: Conn, operator_id: UUID | str, password: str, *, must_change: bool, actor: str
) -> None:
    """Replace an operator's password (checked against the policy). The caller revokes
    sessions as the situation requires (`console_sessions.revoke_other_sessions`)."""
    encoded = hash_password(checked_password(password))
    row = conn.execute(
        "UPDATE operators SET password_hash = %s, must_change_password = %s,"
        " password_changed_at = now(), updated_at = now() WHERE id = %s RETURNING email",
        (encoded, must_change, str(operator_id)),
    ).fetchone()
    if row is None:
        raise NotFoundError("operator not found")
    record_change(
        conn,
        actor=actor,
        action="operator.password_change",
        target_type="operator",
        target_id=str(operator_id),
        details={"email": row[0], "must_change": must_change},
    )


def check_current_password(conn: Conn, operator_id: UUID | str, password: str) -> bool:
    row = conn.execute(
        "SELECT password_hash FROM operators WHERE id = %s", (str(operator_id),)
    ).fetchone()
    return row is not None and verify_password(password, row[0])


def visible_pool_ids(conn: Conn, operator: Operator) -> frozenset[UUID] | None:
    """The Pools an operator may see and change: None for an owner (every Pool), else the
    Pools assigned to the admin."""
    if operator.role == "owner":
        return None
    rows = conn.execute(
        "SELECT pool_id FROM operator_pool_assignments WHERE operator_id = %s", (operator.id,)
    ).fetchall()
    return frozenset(row[0] for row in rows)


def assign_pools(conn: Conn, operator_id: UUID | str, pool_ids: list[UUID], *, actor: str) -> None:
    """Make `pool_ids` exactly the Pools assigned to an admin operator."""
    before = _assigned_names(conn, operator_id)
    conn.execute(
        "DELETE FROM operator_pool_assignments WHERE operator_id = %s", (str(operator_id),)
    )
    for pool_id in pool_ids:
        conn.execute(
            "INSERT INTO operator_pool_assignments (operator_id, pool_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (str(operator_id), pool_id),
        )
    record_change(
        conn,
        actor=actor,
        action="operator.assign_pools",
        target_type="operator",
        target_id=str(operator_id),
        details={
            "pools": [str(p) for p in pool_ids],
            **changed_values({"pools": before}, {"pools": _assigned_names(conn, operator_id)}),
        },
    )


def _assigned_names(conn: Conn, operator_id: UUID | str) -> list[str]:
    rows = conn.execute(
        "SELECT p.name FROM operator_pool_assignments a JOIN pools p ON p.id = a.pool_id"
        " WHERE a.operator_id = %s ORDER BY p.name",
        (str(operator_id),),
    ).fetchall()
    return [row[0] for row in rows]


def set_display_name(conn: Conn, operator_id: UUID | str, display_name: str, *, actor: str) -> None:
    display_name = checked_display_name(display_name)
    before = _locked(conn, operator_id).display_name
    conn.execute(
        "UPDATE operators SET display_name = %s, updated_at = now() WHERE id = %s",
        (display_name, str(operator_id)),
    )
    record_change(
        conn,
        actor=actor,
        action="operator.update",
        target_type="operator",
        target_id=str(operator_id),
        details={
            "display_name": display_name,
            **changed_values({"display_name": before}, {"display_name": display_name}),
        },
    )


# -- managing other operators (the Operators page; owner only) ---------------------------

# A temporary password: 20 URL-safe characters (120 bits), shown once, changed at first
# sign-in (`must_change_password`).
TEMPORARY_PASSWORD_BYTES: Final = 15
STATUSES: Final = ("active", "disabled")


def temporary_password() -> str:
    return secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)


def _require_another_active_owner(conn: Conn, operator_id: UUID | str, what: str) -> None:
    """Refuse `what` when `operator_id` is the only active owner. Locks the active owners'
    rows, so two owners demoting each other at once cannot both succeed."""
    rows = conn.execute(
        "SELECT id FROM operators WHERE role = 'owner' AND status = 'active' ORDER BY id FOR UPDATE"
    ).fetchall()
    others = [row[0] for row in rows if str(row[0]) != str(operator_id)]
    if not others:
        raise ConflictError(
            f"the last active owner cannot be {what}: make another operator an owner first"
        )


def _locked(conn: Conn, operator_id: UUID | str) -> Operator:
    cur = conn.cursor(row_factory=class_row(Operator))
    found = cur.execute(
        f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = %s FOR UPDATE",
        (str(operator_id),),
    ).fetchone()
    if found is None:
        raise NotFoundError("operator not found")
    return found


def _revoke_sessions(conn: Conn, operator_id: UUID | str) -> int:
    return conn.execute(
        "DELETE FROM console_sessions WHERE operator_id = %s", (str(operator_id),)
    ).rowcount


def create_operator_with_temporary_password(
    conn: Conn,
    email: str,
    role: str,
    *,
    display_name: str = "",
    pool_ids: list[UUID] | None = None,
    actor: str,
) -> tuple[Operator, str]:
    """A new operator who must change the returned temporary password (shown once) at the
    first sign-in; an admin gets `pool_ids` assigned."""
    password = temporary_password()
    operator = create_operator(
        conn,
        email,
        password,
        role,
        display_name=display_name,
        must_change_password=True,
        actor=actor,
    )
    if role == "admin" and pool_ids:
        assign_pools(conn, operator.id, _existing_pools(conn, pool_ids), actor=actor)
    return operator, password


def _existing_pools(conn: Conn, pool_ids: list[UUID]) -> list[UUID]:
    rows = conn.execute(
        "SELECT id FROM pools WHERE id = ANY(%s::uuid[]) ORDER BY name", (pool_ids,)
    ).fetchall()
    if len(rows) != len(set(pool_ids)):
        raise InvalidInputError("one of the chosen Pools does not exist")
    return [row[0] for row in rows]


def set_role(conn: Conn, operator_id: UUID | str, role: str, *, actor: str) -> Operator:
    """Make an operator owner or admin. The last active owner cannot be demoted. An admin's
    Pool assignments are kept (an owner sees every Pool regardless)."""
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    current = _locked(conn, operator_id)
    if current.role == role:
        return current
    if current.role == "owner" and current.status == "active":
        _require_another_active_owner(conn, operator_id, "demoted")
    conn.execute(
        "UPDATE operators SET role = %s, updated_at = now() WHERE id = %s", (role, current.id)
    )
    record_change(
        conn,
        actor=actor,
        action="operator.update",
        target_type="operator",
        target_id=current.id,
        details={
            "email": current.email,
            "role": role,
            **changed_values({"role": current.role}, {"role": role}),
        },
    )
    return get_operator(conn, current.id)


def set_pools(conn: Conn, operator_id: UUID | str, pool_ids: list[UUID], *, actor: str) -> None:
    """Make `pool_ids` (which must exist) exactly the Pools assigned to an operator."""
    current = _locked(conn, operator_id)
    assign_pools(conn, current.id, _existing_pools(conn, pool_ids), actor=actor)


def set_status(conn: Conn, operator_id: UUID | str, status: str, *, actor: str) -> int:
    """Deactivate (`disabled`) or reactivate (`active`) an operator. Deactivating revokes
    every session of theirs; the last active owner cannot be deactivated. Returns the
    number of sessions ended."""
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}")
    current = _locked(conn, operator_id)
    if status == "disabled" and current.role == "owner" and current.status == "active":
        _require_another_active_owner(conn, operator_id, "deactivated")
    conn.execute(
        "UPDATE operators SET status = %s, updated_at = now() WHERE id = %s",
        (status, current.id),
    )
    ended = _revoke_sessions(conn, current.id) if status == "disabled" else 0
    if current.status != status:
        record_change(
            conn,
            actor=actor,
            action="operator.deactivate" if status == "disabled" else "operator.reactivate",
            target_type="operator",
            target_id=current.id,
            details={"email": current.email, "sessions_ended": ended},
        )
    return ended


def reset_password(conn: Conn, operator_id: UUID | str, *, actor: str) -> str:
    """A new temporary password (returned, shown once; changed at the next sign-in); every
    session of the operator ends."""
    current = _locked(conn, operator_id)
    password = temporary_password()
    set_password(conn, current.id, password, must_change=True, actor=actor)
    ended = _revoke_sessions(conn, current.id)
    record_change(
        conn,
        actor=actor,
        action="operator.password_reset",
        target_type="operator",
        target_id=current.id,
        details={"email": current.email, "sessions_ended": ended},
    )
    return password


def delete_operator(conn: Conn, operator_id: UUID | str, *, actor: str) -> None:
    """Delete an operator (their sessions, codes and assignments go with them). The last
    active owner cannot be deleted."""
    current = _locked(conn, operator_id)
    if current.role == "owner" and current.status == "active":
        _require_another_active_owner(conn, operator_id, "deleted")
    conn.execute("DELETE FROM operators WHERE id = %s", (current.id,))
    record_change(
        conn,
        actor=actor,
        action="operator.delete",
        target_type="operator",
        target_id=current.id,
        details={"email": current.email, "role": current.role},
    )


def assigned_pools(conn: Conn) -> dict[UUID, list[str]]:
    """Each operator's assigned Pools, by name."""
    rows = conn.execute(
        "SELECT a.operator_id, p.name FROM operator_pool_assignments a"
        " JOIN pools p ON p.id = a.pool_id ORDER BY p.name"
    ).fetchall()
    out: dict[UUID, list[str]] = {}
    for operator_id, name in rows:
        out.setdefault(operator_id, []).append(name)
    return out


def find_operator(conn: Conn, email: str) -> Operator:
    """The operator with this email (any case)."""
    if not findable(email):
        raise NotFoundError("operator not found")
    row = conn.execute(
        "SELECT id FROM operators WHERE email = %s", (email.strip().lower(),)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no operator with email {email.strip().lower()!r}")
    return get_operator(conn, row[0])
