"""The configuration snapshot the gateway keeps in memory (DESIGN §3: no request waits on
the database). Reload it whenever CONFIG_CHANNEL fires."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.accounts import quota_by_account
from pooler.store.common import Conn
from pooler.store.models import AssignmentEntry, KeyEntry, Pool, RuntimeAccount, RuntimeSnapshot
from pooler.store.pools import POOL_COLUMNS


def load_runtime_snapshot(conn: Conn) -> RuntimeSnapshot:
    """Pools, active keys by digest, accounts, active assignments and latest quota.

    The queries run in the caller's transaction (READ COMMITTED): a change committed between
    two of them can show half-applied, and is followed by its NOTIFY, hence a reload."""
    pools = (
        conn.cursor(row_factory=class_row(Pool))
        .execute(f"SELECT {POOL_COLUMNS} FROM pools")
        .fetchall()
    )
    keys = {
        digest: KeyEntry(
            key_id,
            pool_id,
            prefix,
            name,
            tuple(models) if models is not None else None,
            effort,
            effort_mode,
        )
        for digest, key_id, pool_id, prefix, name, models, effort, effort_mode in conn.execute(
            "SELECT key_digest, id, pool_id, key_prefix, name, allowed_models, reasoning_effort,"
            " reasoning_effort_mode FROM pool_api_keys WHERE status = 'active'"
        )
    }
    accounts = (
        conn.cursor(row_factory=class_row(RuntimeAccount))
        .execute(
            "SELECT id, label, lifecycle, plan_type, chatgpt_account_id, chatgpt_user_id, email,"
            " access_token_expires_at FROM upstream_accounts"
        )
        .fetchall()
    )
    assignments: defaultdict[UUID, list[AssignmentEntry]] = defaultdict(list)
    for pool_id, account_id, weight in conn.execute(
        "SELECT pool_id, account_id, weight FROM pool_assignments WHERE status = 'active'"
        " ORDER BY pool_id, account_id"
    ):
        assignments[pool_id].append(AssignmentEntry(account_id, weight))
    return RuntimeSnapshot(
        pools={pool.id: pool for pool in pools},
        keys={bytes(digest): entry for digest, entry in keys.items()},
        accounts={account.id: account for account in accounts},
        assignments={pool_id: tuple(found) for pool_id, found in assignments.items()},
        quota=quota_by_account(conn),
    )
