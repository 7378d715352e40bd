"""Names an operator will see printed are refused at the store layer when they hold control
characters (the CLI and the admin pages share it); text from an imported auth.json or from
the upstream is stored escaped; a lookup by a NUL name is "not found", not a driver error;
a key name is unique among a Pool's active keys, also for databases upgraded with
duplicates (migration 0005)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from pooler import store
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.emulator.tokens import Identity, mint_token_set
from pooler.migrate import available_migrations, migrate
from pooler.store.common import ConflictError, InvalidInputError, NotFoundError, record_change

HOSTILE = ("bad\x1b[31m", "nul\x00", "bell\x07", "line\nbreak", "rtl\u202eoverride")


def auth_json(email: str, plan: str, account_id: str = "acct-1") -> dict[str, object]:
    tokens = mint_token_set(Identity(account_id, "user-1", email, plan), time.time(), 3600)
    return {
        "auth_mode": "chatgpt",
        "tokens": {
            "id_token": tokens.id_token,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "account_id": account_id,
        },
    }


def test_pool_key_and_operator_names_refuse_control_characters(
    database: Database, secret_key: bytes
) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    database.run_sync(lambda c: store.create_operator(c, "op@example.com", "a long password"))
    for name in HOSTILE:
        with pytest.raises(InvalidInputError, match="control"):
            database.run_sync(lambda c: store.create_pool(c, name))  # noqa: B023
        with pytest.raises(InvalidInputError, match="control"):
            database.run_sync(lambda c: store.create_key(c, secret_key, "team", name))  # noqa: B023
        with pytest.raises(InvalidInputError, match="control"):
            database.run_sync(
                lambda c: store.create_operator(c, f"a{name}@example.com", "a long password")  # noqa: B023
            )
        with pytest.raises(InvalidInputError, match="control"):
            database.run_sync(
                lambda c: store.create_mcp_token(c, secret_key, "op@example.com", name)  # noqa: B023
            )
    assert [p.name for p in database.run_sync(store.list_pools)] == ["team"]
    assert database.run_sync(lambda c: store.list_keys(c)) == []
    # Audit details are stored whatever they hold (jsonb refuses \u0000 otherwise).
    database.run_sync(
        lambda c: record_change(
            c, actor="t\x00", action="x", target_type="pool", target_id="1", details={"n": "\x00"}
        )
    )


def test_lookups_by_impossible_names_are_not_found(database: Database) -> None:
    for ref in ("a\x00b", "bad\udcff"):
        with pytest.raises(NotFoundError):
            database.run_sync(lambda c: store.get_pool(c, ref))  # noqa: B023
        with pytest.raises(NotFoundError):
            database.run_sync(lambda c: store.resolve_key(c, ref))  # noqa: B023
        with pytest.raises(NotFoundError):
            database.run_sync(lambda c: store.resolve_account(c, ref))  # noqa: B023
        assert (
            database.run_sync(
                lambda c: store.verify_operator_password(c, ref, "x")  # noqa: B023
            )
            is None
        )


def test_account_labels_refuse_and_imported_text_is_escaped(
    database: Database, keyring: Keyring
) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    data = auth_json("evil\x1b]0;pwned\x07@example.com", "plus\x00")
    with pytest.raises(InvalidInputError, match="control"):
        database.run_sync(lambda c: store.import_account(c, keyring, "team", data, "l\x1bbl"))
    account = database.run_sync(lambda c: store.import_account(c, keyring, "team", data))
    assert account.label == "evil\\x1b]0;pwned\\x07@example.com"
    assert account.plan_type == "plus\\x00"
    bad_id = auth_json("a@example.com", "plus", account_id="acct\x1b[2J")
    with pytest.raises(InvalidInputError, match="control"):
        database.run_sync(lambda c: store.import_account(c, keyring, "team", bad_id))
    # An upstream error code naming a lifecycle reason is stored escaped.
    moved = database.run_sync(
        lambda c: store.set_lifecycle(c, account.id, "reauth_required", "refresh\x00reused")
    )
    assert moved.lifecycle_reason == "refresh\\x00reused"


def test_key_names_are_unique_among_a_pools_active_keys(
    database: Database, secret_key: bytes
) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    database.run_sync(lambda c: store.create_pool(c, "other"))
    _, first = database.run_sync(lambda c: store.create_key(c, secret_key, "team", "ci"))
    with pytest.raises(ConflictError, match="already has an active key named 'ci'"):
        database.run_sync(lambda c: store.create_key(c, secret_key, "team", "ci"))
    database.run_sync(lambda c: store.create_key(c, secret_key, "other", "ci"))
    for _ in range(2):  # unnamed keys may repeat
        database.run_sync(lambda c: store.create_key(c, secret_key, "team", ""))
    database.run_sync(lambda c: store.revoke_key(c, str(first.id)))  # revoking frees the name
    database.run_sync(lambda c: store.create_key(c, secret_key, "team", "ci"))


@pytest.fixture
def empty_db_url(pg_server: Any) -> Iterator[str]:
    url = pg_server.create_database(migrated=False)
    try:
        yield url
    finally:
        pg_server.drop_database(url)


def test_upgrade_renames_duplicate_key_names(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, text in available_migrations():
            if version < "0005":
                conn.execute(text.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        pool = conn.execute("INSERT INTO pools (name) VALUES ('team') RETURNING id").fetchone()
        assert pool is not None
        for name, status in [
            ("ci", "active"),
            ("ci", "active"),
            ("ci", "revoked"),
            ("", "active"),
            ("", "active"),
            ("x" * 100, "active"),
            ("x" * 100, "active"),
        ]:
            conn.execute(
                "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest, status,"
                " revoked_at) VALUES (%s, %s, %s, %s, %s,"
                " CASE WHEN %s = 'revoked' THEN now() END)",
                (pool[0], name, "sk-cxp-" + uuid4().hex[:6], os.urandom(32), status, status),
            )
    assert [v for v in migrate(empty_db_url) if v.startswith("0005")]
    with psycopg.connect(empty_db_url) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM pool_api_keys WHERE status = 'active' ORDER BY created_at, id"
            )
        ]
        renamed = conn.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'api_key.rename'"
        ).fetchone()
    assert names.count("ci") == 1 and names.count("") == 2 and names.count("x" * 100) == 1
    assert sum(name.startswith("ci (") for name in names) == 1
    assert all(len(name) <= 100 for name in names)
    assert renamed == (2,)
