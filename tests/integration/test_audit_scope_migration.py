"""Migration 0014 on a database with an audit trail written before it: each existing row
gets the Pool it concerns where its target or details make that known (a Pool's own
events, a key or invite that still exists, a Pool named in the details), NULL otherwise,
and its outcome ('failed' for failures, 'refused' for throttled sign-ins, else 'ok')."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pooler.migrate import available_migrations, migrate

MIGRATION = "0014_audit_scope"


@pytest.fixture
def url_before_0014(pg_server: Any) -> Iterator[str]:
    """A database migrated up to (not including) 0014."""
    url: str = pg_server.create_database(migrated=False)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, text in available_migrations():
                if version >= MIGRATION:
                    break
                conn.execute(text.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        yield url
    finally:
        pg_server.drop_database(url)


def test_existing_rows_are_backfilled(url_before_0014: str) -> None:
    pool, gone_pool = uuid4(), uuid4()
    key, gone_key, invite, account = uuid4(), uuid4(), uuid4(), uuid4()
    rows: dict[str, tuple[str, str, str, dict[str, Any]]] = {
        "pool": ("pool.update", "pool", str(pool), {"name": "team"}),
        "deleted pool": ("pool.delete", "pool", str(gone_pool), {"name": "old"}),
        "key": ("api_key.create", "api_key", str(key), {"pool": "team"}),
        "revoked key gone": ("api_key.revoke", "api_key", str(gone_key), {"pool": "team"}),
        "invite": ("invite.create", "invite", str(invite), {}),
        "import": ("upstream_account.import", "account", str(account), {"pool": "team"}),
        "lifecycle": ("upstream_account.lifecycle", "account", str(account), {"to": "paused"}),
        "operator": ("operator.create", "operator", str(uuid4()), {"email": "a@example.com"}),
        "wrong password": ("console.sign_in_failed", "operator", "unknown", {"reason": "bad"}),
        "throttled": ("console.sign_in_failed", "operator", "unknown", {"reason": "throttled"}),
        "refresh failed": ("account.refresh", "account", str(account), {"ok": False}),
        "refresh ok": ("account.refresh", "account", str(account), {"ok": True}),
        "odd pool id": ("pool.update", "pool", "not-a-uuid", {}),
    }
    with psycopg.connect(url_before_0014, autocommit=True) as conn:
        conn.execute("INSERT INTO pools (id, name) VALUES (%s, 'team')", (pool,))
        conn.execute(
            "INSERT INTO pool_api_keys (id, pool_id, name, key_prefix, key_digest)"
            " VALUES (%s, %s, 'k', 'sk-cxp-abcde', %s)",
            (key, pool, os.urandom(32)),
        )
        conn.execute(
            "INSERT INTO pool_invites (id, pool_id, token_digest, created_by, expires_at)"
            " VALUES (%s, %s, %s, 'owner', now())",
            (invite, pool, os.urandom(32)),
        )
        ids = {}
        for name, (action, target_type, target_id, details) in rows.items():
            found = conn.execute(
                "INSERT INTO audit_events (actor, action, target_type, target_id, details)"
                " VALUES ('someone', %s, %s, %s, %s) RETURNING id",
                (action, target_type, target_id, Jsonb(details)),
            ).fetchone()
            assert found is not None
            ids[name] = found[0]

    assert migrate(url_before_0014)[0] == MIGRATION
    with psycopg.connect(url_before_0014) as conn:
        got = {
            row[0]: (row[1], row[2])
            for row in conn.execute("SELECT id, pool_id, outcome FROM audit_events")
        }
    expected: dict[str, tuple[UUID | None, str]] = {
        "pool": (pool, "ok"),
        "deleted pool": (gone_pool, "ok"),
        "key": (pool, "ok"),
        "revoked key gone": (pool, "ok"),  # by the Pool name its details carry
        "invite": (pool, "ok"),
        "import": (pool, "ok"),
        "lifecycle": (None, "ok"),  # nothing says which Pool
        "operator": (None, "ok"),
        "wrong password": (None, "failed"),
        "throttled": (None, "refused"),
        "refresh failed": (None, "failed"),
        "refresh ok": (None, "ok"),
        "odd pool id": (None, "ok"),
    }
    assert {name: got[ids[name]] for name in rows} == expected
