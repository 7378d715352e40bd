"""Pools and the assignment of upstream accounts to them."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import (
    ConflictError,
    Conn,
    InvalidInputError,
    NotFoundError,
    changed_values,
    check_printable,
    record_change,
    require_choice,
)
from pooler.store.models import Assignment, Pool
from pooler.store.text import findable

STRATEGIES: Final = ("least_used", "round_robin", "fill_first", "weighted")
POOL_STATUSES: Final = ("active", "disabled")
ASSIGNMENT_STATUSES: Final = ("active", "disabled")

POOL_COLUMNS: Final = (
    "id, name, strategy, status, quota_threshold_percent::float8 AS quota_threshold_percent,"
    " retry_budget, max_in_flight_per_account, created_at, updated_at, continuity_enabled,"
    " v1_enabled"
)


def create_pool(
    conn: Conn,
    name: str,
    strategy: str = "least_used",
    *,
    actor: str = "system",
    **policy: Any,
) -> Pool:
    """A new Pool named `name`; `policy` takes `update_pool`'s settings (omitted or None:
    the defaults). A duplicate name is a ConflictError (param "name")."""
    _check_name(name)
    changes = policy_changes(strategy=strategy, **policy)
    columns = ["name", *changes]
    cur = conn.cursor(row_factory=class_row(Pool))
    pool = cur.execute(
        f"INSERT INTO pools ({', '.join(columns)})"
        f" VALUES ({', '.join(f'%({c})s' for c in columns)})"
        f" ON CONFLICT (name) DO NOTHING RETURNING {POOL_COLUMNS}",
        {**changes, "name": name},
    ).fetchone()
    if pool is None:
        raise ConflictError(f"a pool named {name!r} already exists", "name")
    record_change(
        conn,
        actor=actor,
        action="pool.create",
        target_type="pool",
        target_id=pool.id,
        details={"name": name, **changes},
        pool_id=pool.id,
    )
    return pool


def policy_changes(
    *,
    strategy: str | None = None,
    status: str | None = None,
    retry_budget: int | None = None,
    quota_threshold_percent: float | None = None,
    max_in_flight_per_account: int | None = None,
    continuity_enabled: bool | None = None,
    v1_enabled: bool | None = None,
) -> dict[str, Any]:
    """The checked column values of the given settings (None: not given). Each refusal is
    an InvalidInputError whose `param` names the setting."""
    changes: dict[str, Any] = {}
    if continuity_enabled is not None:
        changes["continuity_enabled"] = bool(continuity_enabled)
    if v1_enabled is not None:
        changes["v1_enabled"] = bool(v1_enabled)
    if strategy is not None:
        changes["strategy"] = require_choice(strategy, STRATEGIES, "strategy", param="strategy")
    if status is not None:
        changes["status"] = require_choice(status, POOL_STATUSES, "status", param="status")
    if retry_budget is not None:
        changes["retry_budget"] = _in_range(retry_budget, 0, 20, "retry_budget")
    if quota_threshold_percent is not None:
        if isinstance(quota_threshold_percent, bool) or not 0 < quota_threshold_percent <= 100:
            raise InvalidInputError(
                "quota_threshold_percent must be in (0, 100]", "quota_threshold_percent"
            )
        changes["quota_threshold_percent"] = quota_threshold_percent
    if max_in_flight_per_account is not None:
        changes["max_in_flight_per_account"] = _in_range(
            max_in_flight_per_account, 1, 100_000, "max_in_flight_per_account"
        )
    return changes


def update_pool(
    conn: Conn,
    name: str,
    *,
    strategy: str | None = None,
    status: str | None = None,
    retry_budget: int | None = None,
    quota_threshold_percent: float | None = None,
    max_in_flight_per_account: int | None = None,
    continuity_enabled: bool | None = None,
    v1_enabled: bool | None = None,
    actor: str = "system",
) -> Pool:
    """Change the given settings (None: keep); `v1_enabled` opens or closes the Pool's
    OpenAI-compatible /v1 surface."""
    changes = policy_changes(
        strategy=strategy,
        status=status,
        retry_budget=retry_budget,
        quota_threshold_percent=quota_threshold_percent,
        max_in_flight_per_account=max_in_flight_per_account,
        continuity_enabled=continuity_enabled,
        v1_enabled=v1_enabled,
    )
    if not changes:
        return get_pool(conn, name)
    before = _locked_policy(conn, name, list(changes))
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    cur = conn.cursor(row_factory=class_row(Pool))
    pool = cur.execute(
        f"UPDATE pools SET {assignments}, updated_at = now()"
        f" WHERE name = %(name)s RETURNING {POOL_COLUMNS}",
        {**changes, "name": name},
    ).fetchone()
    if pool is None:
        raise NotFoundError(f"pool {name!r} not found")
    after = {column: getattr(pool, column) for column in changes}
    record_change(
        conn,
        actor=actor,
        action="pool.update",
        target_type="pool",
        target_id=pool.id,
        details={"name": name, **changed_values(before, after)},
        pool_id=pool.id,
    )
    return pool


def _locked_policy(conn: Conn, name: str, columns: list[str]) -> dict[str, Any]:
    """The Pool's current values of `columns` (as `Pool` holds them), its row locked until
    the transaction ends: what an edit's audit row shows as "before"."""
    if not findable(name):
        raise NotFoundError("pool not found (the name holds a NUL or an invalid character)")
    cur = conn.cursor(row_factory=class_row(Pool))
    pool = cur.execute(
        f"SELECT {POOL_COLUMNS} FROM pools WHERE name = %s FOR UPDATE", (name,)
    ).fetchone()
    if pool is None:
        raise NotFoundError(f"pool {name!r} not found")
    return {column: getattr(pool, column) for column in columns}


def delete_pool(conn: Conn, name: str, *, actor: str = "system") -> Pool:
    """Delete a Pool that nothing depends on: refused (ConflictError, naming them) while it
    has active API keys or active account assignments. Its revoked keys, disabled
    assignments, continuity pins, files and admins' assignments go with it; its request
    logs and audit trail stay."""
    pool = get_pool(conn, name)
    # Lock the Pool's row: a key or assignment added meanwhile waits for this transaction
    # (its foreign key check shares the row lock) and then finds the Pool gone.
    conn.execute("SELECT 1 FROM pools WHERE id = %s FOR UPDATE", (pool.id,))
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pool_api_keys WHERE pool_id = %(id)s AND status = 'active'),"
        " (SELECT count(*) FROM pool_assignments WHERE pool_id = %(id)s AND status = 'active')",
        {"id": pool.id},
    ).fetchone()
    keys, accounts = row if row is not None else (0, 0)
    if keys or accounts:
        what = []
        if keys:
            what.append(f"{keys} active API key{'s' if keys != 1 else ''}")
        if accounts:
            what.append(f"{accounts} assigned account{'s' if accounts != 1 else ''}")
        steps = []
        if keys:
            steps.append("revoke its keys")
        if accounts:
            steps.append("unassign its accounts")
        raise ConflictError(
            f"pool {name!r} still has {' and '.join(what)}: {' and '.join(steps)} first"
        )
    conn.execute("DELETE FROM pools WHERE id = %s", (pool.id,))
    record_change(
        conn,
        actor=actor,
        action="pool.delete",
        target_type="pool",
        target_id=pool.id,
        details={"name": name},
        pool_id=pool.id,
    )
    return pool


def pool_by_id(conn: Conn, pool_id: UUID) -> Pool:
    cur = conn.cursor(row_factory=class_row(Pool))
    pool = cur.execute(f"SELECT {POOL_COLUMNS} FROM pools WHERE id = %s", (pool_id,)).fetchone()
    if pool is None:
        raise NotFoundError("pool not found")
    return pool


def get_pool(conn: Conn, name: str) -> Pool:
    if not findable(name):
        raise NotFoundError("pool not found (the name holds a NUL or an invalid character)")
    cur = conn.cursor(row_factory=class_row(Pool))
    pool = cur.execute(f"SELECT {POOL_COLUMNS} FROM pools WHERE name = %s", (name,)).fetchone()
    if pool is None:
        raise NotFoundError(f"pool {name!r} not found")
    return pool


def list_pools(conn: Conn) -> list[Pool]:
    cur = conn.cursor(row_factory=class_row(Pool))
    return cur.execute(f"SELECT {POOL_COLUMNS} FROM pools ORDER BY name").fetchall()


def set_assignment(
    conn: Conn,
    pool_name: str,
    account_id: UUID,
    *,
    status: str = "active",
    weight: int | None = None,
    actor: str = "system",
) -> Assignment:
    """Assign an account to a Pool, or change that assignment's status or weight."""
    require_choice(status, ASSIGNMENT_STATUSES, "assignment status")
    if weight is not None:
        _in_range(weight, 0, 1_000_000, "weight")
    pool = get_pool(conn, pool_name)
    if (
        conn.execute("SELECT 1 FROM upstream_accounts WHERE id = %s", (account_id,)).fetchone()
        is None
    ):
        raise NotFoundError(f"account {account_id} not found")
    cur = conn.cursor(row_factory=class_row(Assignment))
    assignment = cur.execute(
        "INSERT INTO pool_assignments (pool_id, account_id, status, weight)"
        " VALUES (%(pool)s, %(account)s, %(status)s, coalesce(%(weight)s, 1))"
        " ON CONFLICT (pool_id, account_id) DO UPDATE SET status = EXCLUDED.status,"
        " weight = coalesce(%(weight)s, pool_assignments.weight), updated_at = now()"
        " RETURNING pool_id, account_id, status, weight",
        {"pool": pool.id, "account": account_id, "status": status, "weight": weight},
    ).fetchone()
    assert assignment is not None
    record_change(
        conn,
        actor=actor,
        action="pool.assignment_update",
        target_type="pool",
        target_id=pool.id,
        details={"account_id": str(account_id), "status": status, "weight": assignment.weight},
        pool_id=pool.id,
    )
    return assignment


def _check_name(name: str) -> None:
    check_printable(name, "a pool name", param="name")
    if not name or name != name.strip() or len(name) > 64:
        raise InvalidInputError(
            "a pool name is 1 to 64 characters, without surrounding spaces", "name"
        )


def _in_range(value: int, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be between {low} and {high}", what)
    return value
