"""The service layer against a real PostgreSQL (one fresh database per test)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import trio

from pooler import store
from pooler.crypto import CryptoError, Keyring, key_digest
from pooler.db import Database, DatabaseError, DatabaseUnavailable, notify
from pooler.store.credentials import refresh_lock_key
from pooler.store.jwt_claims import ClaimsError, decode_claims, identity_from_tokens

NOW = datetime(2026, 1, 1, tzinfo=UTC)
AUTH_NS = "https://api.openai.com/auth"


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def auth_json(
    account_id: str = "acct-1",
    user_id: str = "user-1",
    email: str = "one@example.com",
    plan: str = "plus",
    exp: datetime | None = None,
) -> dict[str, Any]:
    """A Codex-shaped auth.json whose tokens carry unique markers."""
    auth = {
        "chatgpt_account_id": account_id,
        "chatgpt_user_id": user_id,
        "chatgpt_plan_type": plan,
    }
    expires = int((exp or datetime.now(UTC) + timedelta(hours=1)).timestamp())
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": jwt({"email": email, AUTH_NS: auth, "marker": secrets.token_hex(16)}),
            "access_token": jwt({"exp": expires, AUTH_NS: auth, "marker": secrets.token_hex(16)}),
            "refresh_token": "rt_" + secrets.token_urlsafe(32),
            "account_id": account_id,
        },
        "last_refresh": "2026-01-01T00:00:00Z",
    }


def dump_database(url: str) -> str:
    """Every row of every table, as text (bytea as hex), plus the notification queue."""
    chunks = []
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for name in names:
            for (text,) in conn.execute(f"SELECT t::text FROM {name} t"):
                chunks.append(text)
    return "\n".join(chunks)


class Collector:
    """A notification callback that can be awaited."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._changed = trio.Event()

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def wait_for(self, count: int) -> list[str]:
        with trio.fail_after(5):
            while len(self.payloads) < count:
                self._changed = trio.Event()
                await self._changed.wait()
        return self.payloads


def assert_absent(haystack: str, *needles: str) -> None:
    for needle in needles:
        assert needle not in haystack
        assert needle.encode().hex() not in haystack


# --- claims and auth.json parsing (pure) ---------------------------------------------------


def test_claims_decoder_reads_the_auth_namespace() -> None:
    data = auth_json(email="Me@Example.com", plan="hc")
    ident = identity_from_tokens(data["tokens"]["id_token"], data["tokens"]["access_token"])
    assert ident.email == "Me@Example.com"
    assert ident.chatgpt_account_id == "acct-1"
    assert ident.chatgpt_user_id == "user-1"
    assert ident.plan_type == "enterprise"
    assert ident.access_token_expires_at is not None
    only_access = identity_from_tokens(None, jwt({"https://api.openai.com/auth": {"user_id": "u"}}))
    assert only_access.chatgpt_user_id == "u"
    assert only_access.access_token_expires_at is None


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.!!!.c", "a." + "W10" + ".c", "a..c"])
def test_claims_decoder_rejects_non_jwts(token: str) -> None:
    with pytest.raises(ClaimsError):
        decode_claims(token)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(auth_mode="apikey"), "auth_mode"),
        (lambda d: d.update(auth_mode=None, OPENAI_API_KEY="sk-x"), "auth_mode"),
        (lambda d: d.pop("tokens"), "no ChatGPT tokens"),
        (lambda d: d["tokens"].pop("refresh_token"), "refresh_token"),
        (lambda d: d["tokens"].update(access_token="opaque"), "not readable JWTs"),
        (lambda d: d["tokens"].update(account_id="acct-other"), "does not match"),
    ],
)
def test_bad_auth_json_is_refused(mutate: Any, message: str) -> None:
    data = auth_json()
    mutate(data)
    with pytest.raises(store.InvalidInputError, match=message) as info:
        store.parse_auth_json(data)
    assert data.get("tokens", {}).get("refresh_token", "none") not in str(info.value)


# --- pools, keys, accounts ----------------------------------------------------------------


def test_pool_key_account_round_trip(
    database: Database, keyring: Keyring, secret_key: bytes
) -> None:
    data = auth_json()
    tokens = data["tokens"]

    def setup(conn: psycopg.Connection[Any]) -> tuple[str, store.Account, store.Pool]:
        pool = store.create_pool(conn, "team", "round_robin")
        raw, _ = store.create_key(conn, secret_key, "team", "ci")
        account = store.import_account(conn, keyring, "team", data, label="first")
        return raw, account, pool

    raw, account, pool = database.run_sync(setup)
    assert account.label == "first" and account.email == "one@example.com"
    assert account.plan_type == "plus" and account.lifecycle == "active"
    assert account.access_token_expires_at is not None

    snapshot = database.run_sync(store.load_runtime_snapshot)
    entry = snapshot.keys[key_digest(secret_key, raw)]
    assert entry.pool_id == pool.id and entry.prefix == raw[:12] and entry.name == "ci"
    assert snapshot.pools[pool.id].strategy == "round_robin"
    assert snapshot.pool_by_name("team") == snapshot.pools[pool.id]
    assert snapshot.assignments[pool.id] == (store.AssignmentEntry(account.id, 1),)
    assert snapshot.accounts[account.id].chatgpt_account_id == "acct-1"
    assert key_digest(secret_key, raw + "x") not in snapshot.keys

    creds = database.run_sync(lambda c: store.load_account_credentials(c, keyring, account.id))
    assert creds.access_token == tokens["access_token"]
    assert creds.refresh_token == tokens["refresh_token"]
    assert creds.id_token == tokens["id_token"]
    assert tokens["refresh_token"] not in repr(creds)

    [view] = database.run_sync(lambda c: store.list_accounts(c, "team"))
    assert view.id == account.id and view.pools == ("team",) and view.quota == ()
    [key] = database.run_sync(lambda c: store.list_keys(c, "team"))
    assert key.key_prefix == raw[:12] and key.status == "active" and key.pool_name == "team"
    actions = [e.action for e in database.run_sync(store.list_audit_events)]
    assert sorted(actions) == ["api_key.create", "pool.create", "upstream_account.import"]


def test_no_secret_is_stored_in_clear(
    database: Database, db_url: str, keyring: Keyring, secret_key: bytes
) -> None:
    first, second = auth_json(), auth_json(account_id="acct-2", user_id="user-2")
    refreshed_access = jwt({"exp": 2_000_000_000, "marker": secrets.token_hex(16)})
    refreshed_refresh = "rt_" + secrets.token_urlsafe(32)
    password = "owner-password-" + secrets.token_hex(8)

    def work(conn: psycopg.Connection[Any]) -> tuple[str, str, UUID]:
        store.create_owner(conn, "owner@example.com", password)
        store.create_pool(conn, "team")
        raw_key, _ = store.create_key(conn, secret_key, "team", "k")
        raw_token, _ = store.create_mcp_token(conn, secret_key, "owner@example.com", "t")
        account = store.import_account(conn, keyring, "team", first)
        store.import_account(conn, keyring, "team", second)
        store.store_refreshed_tokens(
            conn, keyring, account.id, refreshed_access, refreshed_refresh, None, None
        )
        return raw_key, raw_token, account.id

    raw_key, raw_token, _ = database.run_sync(work)
    dump = dump_database(db_url)
    assert "owner@example.com" in dump  # the dump does see the data
    assert_absent(dump, raw_key, raw_token, password, refreshed_access, refreshed_refresh)
    for data in (first, second):
        for name in ("access_token", "refresh_token", "id_token"):
            assert_absent(dump, data["tokens"][name])
    assert_absent(dump, raw_key[12:20], raw_token[12:20])  # nothing past the display prefix


def test_pool_management_errors(database: Database) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    with pytest.raises(store.ConflictError):
        database.run_sync(lambda c: store.create_pool(c, "team"))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.create_pool(c, "other", "random"))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.create_pool(c, " padded "))
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.get_pool(c, "missing"))
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.update_pool(c, "missing", status="disabled"))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.update_pool(c, "team", retry_budget=-1))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.update_pool(c, "team", quota_threshold_percent=0))


def test_update_pool(database: Database) -> None:
    created = database.run_sync(lambda c: store.create_pool(c, "team"))
    changes: dict[str, Any] = {
        "strategy": "weighted",
        "status": "disabled",
        "retry_budget": 5,
        "quota_threshold_percent": 92.5,
        "max_in_flight_per_account": 4,
    }
    updated = database.run_sync(lambda c: store.update_pool(c, "team", **changes))
    assert (updated.strategy, updated.status, updated.retry_budget) == ("weighted", "disabled", 5)
    assert updated.quota_threshold_percent == 92.5
    assert updated.max_in_flight_per_account == 4
    assert updated.updated_at >= created.updated_at
    assert database.run_sync(store.list_pools) == [updated]
    assert database.run_sync(lambda c: store.update_pool(c, "team")) == updated


def test_reimport_updates_tokens_and_reactivates(database: Database, keyring: Keyring) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    database.run_sync(lambda c: store.create_pool(c, "spare"))
    first = database.run_sync(
        lambda c: store.import_account(c, keyring, "team", auth_json(), label="mine")
    )
    database.run_sync(lambda c: store.set_lifecycle(c, first.id, "reauth_required", "reused"))
    again = auth_json(plan="pro", email="new@example.com")
    second = database.run_sync(lambda c: store.import_account(c, keyring, "spare", again))
    assert second.id == first.id
    assert second.label == "mine"  # an explicit label survives a re-import without one
    assert (second.lifecycle, second.lifecycle_reason) == ("active", None)
    assert (second.plan_type, second.email) == ("pro", "new@example.com")
    creds = database.run_sync(lambda c: store.load_account_credentials(c, keyring, first.id))
    assert creds.refresh_token == again["tokens"]["refresh_token"]
    [view] = database.run_sync(store.list_accounts)
    assert view.pools == ("spare", "team")

    other_seat = auth_json(user_id="user-2", email="two@example.com")
    third = database.run_sync(lambda c: store.import_account(c, keyring, "team", other_seat))
    assert third.id != first.id and third.label == "two@example.com"
    assert len(database.run_sync(store.list_accounts)) == 2
    assert [v.id for v in database.run_sync(lambda c: store.list_accounts(c, "spare"))] == [
        first.id
    ]


def test_import_into_missing_pool_changes_nothing(database: Database, keyring: Keyring) -> None:
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.import_account(c, keyring, "nope", auth_json()))
    assert database.run_sync(store.list_accounts) == []


def test_refreshed_tokens_are_stored_and_decryptable(database: Database, keyring: Keyring) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    data = auth_json()
    account = database.run_sync(lambda c: store.import_account(c, keyring, "team", data))
    new_access = jwt(
        {"exp": 2_000_000_000, "https://api.openai.com/auth": {"chatgpt_plan_type": "pro"}}
    )
    expires = datetime(2033, 5, 18, 3, 33, 20, tzinfo=UTC)

    def refresh(conn: psycopg.Connection[Any]) -> None:
        store.account_refresh_lock(conn, account.id)
        store.store_refreshed_tokens(conn, keyring, account.id, new_access, "rt-new", None, expires)

    database.run_sync(refresh)
    creds = database.run_sync(lambda c: store.load_account_credentials(c, keyring, account.id))
    assert (creds.access_token, creds.refresh_token) == (new_access, "rt-new")
    assert creds.id_token == data["tokens"]["id_token"]  # not rotated: kept
    assert creds.access_token_expires_at == expires
    after = database.run_sync(lambda c: store.get_account(c, account.id))
    assert after.last_refresh_at is not None and after.plan_type == "pro"
    database.run_sync(
        lambda c: store.store_refreshed_tokens(c, keyring, account.id, "opaque", None, None, None)
    )
    creds = database.run_sync(lambda c: store.load_account_credentials(c, keyring, account.id))
    assert (creds.access_token, creds.refresh_token) == ("opaque", "rt-new")
    with pytest.raises(store.NotFoundError):
        database.run_sync(
            lambda c: store.store_refreshed_tokens(c, keyring, uuid4(), "a", "b", None, None)
        )


def test_old_key_decrypts_and_rows_are_reencrypted(database: Database) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old_ring = Keyring(old_key)
    database.run_sync(lambda c: store.create_pool(c, "team"))
    data, other = auth_json(), auth_json(account_id="acct-2")
    account = database.run_sync(lambda c: store.import_account(c, old_ring, "team", data))
    untouched = database.run_sync(lambda c: store.import_account(c, old_ring, "team", other))

    def versions(account_id: UUID | None = None) -> set[int]:
        def query(conn: psycopg.Connection[Any]) -> set[int]:
            rows = conn.execute(
                "SELECT key_version FROM account_secrets WHERE %s::uuid IS NULL OR account_id = %s",
                (account_id, account_id),
            )
            return {row[0] for row in rows}

        return database.run_sync(query)

    rotated = Keyring(new_key, old=[old_key])
    creds = database.run_sync(lambda c: store.load_account_credentials(c, rotated, account.id))
    assert creds.refresh_token == data["tokens"]["refresh_token"]
    assert versions(account.id) == {rotated.current_version}  # touched rows moved
    assert versions() == {rotated.current_version, old_ring.current_version}
    new_only = Keyring(new_key)
    with pytest.raises(CryptoError):  # the old key is gone from this keyring
        database.run_sync(lambda c: store.load_account_credentials(c, new_only, untouched.id))
    assert database.run_sync(lambda c: store.reencrypt_all_secrets(c, rotated)) == 3
    assert database.run_sync(lambda c: store.reencrypt_all_secrets(c, rotated)) == 0
    assert versions() == {rotated.current_version}
    creds = database.run_sync(lambda c: store.load_account_credentials(c, new_only, account.id))
    assert creds.access_token == data["tokens"]["access_token"]
    with pytest.raises(CryptoError):
        database.run_sync(lambda c: store.load_account_credentials(c, old_ring, account.id))


def test_ciphertext_is_bound_to_its_account_and_kind(database: Database, keyring: Keyring) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    account = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json()))

    def swap(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE account_secrets s SET nonce = o.nonce, ciphertext = o.ciphertext"
            " FROM account_secrets o WHERE s.account_id = o.account_id"
            " AND s.kind = 'access_token' AND o.kind = 'refresh_token'"
        )

    database.run_sync(swap)
    with pytest.raises(CryptoError):
        database.run_sync(lambda c: store.load_account_credentials(c, keyring, account.id))


def test_lifecycle_and_quota(database: Database, keyring: Keyring) -> None:
    pool = database.run_sync(lambda c: store.create_pool(c, "team"))
    account = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json()))
    paused = database.run_sync(lambda c: store.set_lifecycle(c, account.id, "paused", "operator"))
    assert (paused.lifecycle, paused.lifecycle_reason) == ("paused", "operator")
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.set_lifecycle(c, account.id, "asleep"))
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.set_lifecycle(c, uuid4(), "active"))

    reset = NOW + timedelta(hours=5)
    windows = [
        store.QuotaWindowRow("primary", 42.5, 300, reset, observed_at=NOW),
        store.QuotaWindowRow("secondary", 10, 10080, None, observed_at=NOW),
    ]
    database.run_sync(lambda c: store.upsert_quota_windows(c, account.id, windows))
    stale = [store.QuotaWindowRow("primary", 99, 300, reset, observed_at=NOW - timedelta(1))]
    database.run_sync(lambda c: store.upsert_quota_windows(c, account.id, stale))
    newer = [store.QuotaWindowRow("primary", 50, 300, reset, observed_at=NOW + timedelta(1))]
    database.run_sync(lambda c: store.upsert_quota_windows(c, account.id, newer))
    with pytest.raises(store.InvalidInputError):
        bad = [store.QuotaWindowRow("tertiary", 1)]
        database.run_sync(lambda c: store.upsert_quota_windows(c, account.id, bad))

    [view] = database.run_sync(store.list_accounts)
    assert view.lifecycle == "paused"
    assert [(q.window, q.used_percent, q.window_minutes) for q in view.quota] == [
        ("primary", 50.0, 300),
        ("secondary", 10.0, 10080),
    ]
    assert view.quota[0].reset_at == reset
    snapshot = database.run_sync(store.load_runtime_snapshot)
    assert snapshot.quota[account.id] == view.quota
    assert snapshot.accounts[account.id].lifecycle == "paused"

    disabled = database.run_sync(
        lambda c: store.set_assignment(c, "team", account.id, status="disabled", weight=7)
    )
    assert (disabled.status, disabled.weight) == ("disabled", 7)
    assert pool.id not in database.run_sync(store.load_runtime_snapshot).assignments
    database.run_sync(lambda c: store.set_assignment(c, "team", account.id))
    entries = database.run_sync(store.load_runtime_snapshot).assignments[pool.id]
    assert entries == (store.AssignmentEntry(account.id, 7),)


def test_revoke_key(database: Database, secret_key: bytes) -> None:
    database.run_sync(lambda c: store.create_pool(c, "team"))
    raw1, key1 = database.run_sync(lambda c: store.create_key(c, secret_key, "team", "a"))
    _, key2 = database.run_sync(lambda c: store.create_key(c, secret_key, "team", "b"))
    revoked = database.run_sync(lambda c: store.revoke_key(c, key1.key_prefix))
    assert revoked.id == key1.id and revoked.status == "revoked" and revoked.revoked_at
    revoked2 = database.run_sync(lambda c: store.revoke_key(c, str(key2.id)))
    assert revoked2.status == "revoked"
    assert database.run_sync(store.load_runtime_snapshot).keys == {}
    with pytest.raises(store.NotFoundError) as info:
        database.run_sync(lambda c: store.revoke_key(c, raw1))  # a pasted raw key
    assert raw1 not in str(info.value)
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.list_keys(c, "missing"))
    assert len(database.run_sync(store.list_keys)) == 2

    used = datetime.now(UTC)
    database.run_sync(lambda c: store.mark_keys_used(c, {key1.id: used}))
    [first, _] = database.run_sync(store.list_keys)
    assert first.last_used_at == used


def test_operators_and_mcp_tokens(database: Database, secret_key: bytes) -> None:
    owner = database.run_sync(
        lambda c: store.create_owner(c, " Owner@Example.com ", "s3cret-pw-long")
    )
    assert (owner.email, owner.role, owner.status) == ("owner@example.com", "owner", "active")
    with pytest.raises(store.ConflictError):
        database.run_sync(lambda c: store.create_owner(c, "OWNER@example.com", "another-pw-long"))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.create_owner(c, "x@example.com", "short"))
    with pytest.raises(store.InvalidInputError):
        database.run_sync(lambda c: store.create_owner(c, "not-an-email", "long-enough-pw"))
    assert database.run_sync(store.list_operators) == [owner]
    check = store.verify_operator_password
    assert database.run_sync(lambda c: check(c, "owner@example.com", "s3cret-pw-long")) == owner
    assert database.run_sync(lambda c: check(c, "owner@example.com", "wrong-pw")) is None
    assert database.run_sync(lambda c: check(c, "nobody@example.com", "s3cret-pw-long")) is None

    raw, token = database.run_sync(
        lambda c: store.create_mcp_token(c, secret_key, "owner@example.com", "laptop")
    )
    assert raw.startswith("cxp-mcp-") and token.token_prefix == raw[:12]
    assert database.run_sync(lambda c: store.find_mcp_token(c, secret_key, raw)) == token
    assert database.run_sync(lambda c: store.find_mcp_token(c, secret_key, raw + "x")) is None
    database.run_sync(lambda c: store.revoke_mcp_token(c, str(token.id)))
    assert database.run_sync(lambda c: store.find_mcp_token(c, secret_key, raw)) is None
    assert database.run_sync(store.list_mcp_tokens)[0].status == "revoked"
    with pytest.raises(store.NotFoundError):
        database.run_sync(lambda c: store.create_mcp_token(c, secret_key, "no@example.com"))


# --- request logs and continuity ----------------------------------------------------------


def log_row(n: int, **extra: Any) -> store.RequestLogRow:
    values: dict[str, Any] = {
        "request_id": f"req_{n}",
        "created_at": NOW + timedelta(seconds=n),
        "route": "responses",
        "outcome": "ok",
        "transport": "http_sse",
        "model": "gpt-5-codex",
        "stream": True,
        "status_code": 200,
        "retries": 1,
        "duration_ms": 12.5,
        "ttfb_ms": 3.25,
        "input_tokens": 100,
        "cached_input_tokens": 40,
        "output_tokens": 20,
        "reasoning_tokens": 5,
        "total_tokens": 120,
        "key_prefix": "sk-cxp-abcde",
        "client_user_agent": "codex_cli_rs/0.169.0",
    }
    values.update(extra)
    return store.RequestLogRow(**values)


def test_request_log_batches_are_idempotent(database: Database) -> None:
    excluded = log_row(
        3, outcome="no_eligible_backend", status_code=503, exclusions={"acct-a": "quota_exhausted"}
    )
    batch = [log_row(1), log_row(2), excluded]
    assert database.run_sync(lambda c: store.insert_request_logs(c, batch)) == 3
    retried = [*batch, log_row(4)]
    assert database.run_sync(lambda c: store.insert_request_logs(c, retried)) == 1
    assert database.run_sync(lambda c: store.insert_request_logs(c, [])) == 0
    assert database.run_sync(store.count_request_logs) == 4
    stored = database.run_sync(lambda c: store.recent_request_logs(c, 10))
    assert [row.request_id for row in stored] == ["req_4", "req_3", "req_2", "req_1"]
    assert stored[1] == batch[2]
    assert stored[3] == batch[0]

    attempts = [
        store.AttemptRow("req_3", 1, NOW, "upstream_429", uuid4(), "a", 4.5, 429, "usage_limit"),
        store.AttemptRow("req_3", 2, NOW, "ok", None, None, 1.0, 200, None),
    ]
    assert database.run_sync(lambda c: store.insert_attempts(c, attempts)) == 2
    assert database.run_sync(lambda c: store.insert_attempts(c, attempts)) == 0
    assert database.run_sync(lambda c: store.attempts_for(c, "req_3")) == attempts

    cutoff = NOW + timedelta(seconds=2, milliseconds=500)
    assert database.run_sync(lambda c: store.delete_request_logs_before(c, cutoff)) == 2
    assert database.run_sync(store.count_request_logs) == 2


def test_continuity_pins(database: Database, keyring: Keyring) -> None:
    pool = database.run_sync(lambda c: store.create_pool(c, "team"))
    a = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json()))
    b = database.run_sync(lambda c: store.import_account(c, keyring, "team", auth_json("acct-2")))
    later = datetime.now(UTC) + timedelta(hours=1)
    digest1, digest2, digest3 = os.urandom(32), os.urandom(32), os.urandom(32)
    pins = [
        store.ContinuityPin(pool.id, digest1, a.id, later),
        store.ContinuityPin(pool.id, digest2, a.id, datetime.now(UTC) - timedelta(seconds=1)),
        store.ContinuityPin(pool.id, digest3, uuid4(), later),  # unknown account: skipped
    ]
    assert database.run_sync(lambda c: store.upsert_continuity_pins(c, pins)) == 2
    moved = [store.ContinuityPin(pool.id, digest1, b.id, later)]
    database.run_sync(lambda c: store.upsert_continuity_pins(c, moved))
    assert database.run_sync(lambda c: store.load_continuity_pins(c, pool.id)) == moved
    assert database.run_sync(store.delete_expired_continuity_pins) == 1


def test_refresh_lock_is_exclusive_per_account(database: Database, db_url: str) -> None:
    account_id, other_id = uuid4(), uuid4()
    holding, release = threading.Event(), threading.Event()

    def hold(conn: psycopg.Connection[Any]) -> None:
        store.account_refresh_lock(conn, account_id)
        holding.set()
        release.wait(10)

    thread = threading.Thread(target=database.run_sync, args=(hold,))
    thread.start()
    assert holding.wait(10)
    try:
        with psycopg.connect(db_url) as conn:
            try_lock = "SELECT pg_try_advisory_xact_lock(%s)"
            assert conn.execute(try_lock, (refresh_lock_key(account_id),)).fetchone() == (False,)
            assert conn.execute(try_lock, (refresh_lock_key(other_id),)).fetchone() == (True,)
    finally:
        release.set()
        thread.join(10)
    with psycopg.connect(db_url) as conn:
        assert conn.execute(try_lock, (refresh_lock_key(account_id),)).fetchone() == (True,)
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(RuntimeError):
        store.account_refresh_lock(conn, account_id)


# --- the db module ------------------------------------------------------------------------


async def test_run_maps_errors_and_rolls_back(database: Database) -> None:
    with pytest.raises(DatabaseError) as info:
        await database.run(lambda c: c.execute("SELECT * FROM no_such_table"))
    assert info.value.sqlstate == "42P01"
    assert not isinstance(info.value, DatabaseUnavailable | psycopg.Error)

    def create_then_fail(conn: psycopg.Connection[Any]) -> None:
        store.create_pool(conn, "doomed")
        raise store.InvalidInputError("changed my mind")

    with pytest.raises(store.InvalidInputError):
        await database.run(create_then_fail)
    assert await database.run(store.list_pools) == []
    assert await database.run(store.list_audit_events) == []
    assert await database.ping()


async def test_cancelled_run_rolls_back_promptly(database: Database) -> None:
    def slow_write(conn: psycopg.Connection[Any]) -> None:
        store.create_pool(conn, "slow")
        conn.execute("SELECT pg_sleep(30)")

    start = time.monotonic()
    with trio.move_on_after(0.3) as scope:
        await database.run(slow_write)
    assert scope.cancelled_caught
    assert time.monotonic() - start < 3
    assert await database.run(store.list_pools) == []
    for _ in range(5):  # the pool is healthy afterwards
        assert await database.ping()


async def test_run_under_a_cancelled_scope_never_starts(database: Database) -> None:
    ran = threading.Event()

    def write(conn: psycopg.Connection[Any]) -> None:
        ran.set()
        store.create_pool(conn, "never")

    with trio.CancelScope() as scope:
        scope.cancel()
        await database.run(write)
    assert scope.cancelled_caught and not ran.is_set()
    assert await database.run(store.list_pools) == []


async def test_unreachable_server_is_database_unavailable() -> None:
    db = Database.open("postgresql://postgres@/pooler?host=/nonexistent-dir", acquire_timeout=0.5)
    try:
        with pytest.raises(DatabaseUnavailable):
            await db.run(lambda c: c.execute("SELECT 1"))
        with pytest.raises(DatabaseUnavailable):
            db.run_sync(lambda c: c.execute("SELECT 1"))
        assert not await db.ping()
        async with trio.open_nursery() as nursery:
            with pytest.raises(DatabaseUnavailable):
                await nursery.start(db.listen, store.CONFIG_CHANNEL, print)
    finally:
        db.close()


async def test_config_changes_are_notified_to_listeners(
    database: Database, keyring: Keyring, secret_key: bytes
) -> None:
    config, tokens = Collector(), Collector()
    data = auth_json()
    async with trio.open_nursery() as nursery:
        await nursery.start(database.listen, store.CONFIG_CHANNEL, config)
        await nursery.start(database.listen, store.TOKENS_CHANNEL, tokens)
        pool = await database.run(lambda c: store.create_pool(c, "team"))
        raw, key = await database.run(lambda c: store.create_key(c, secret_key, "team", "k"))
        account = await database.run(lambda c: store.import_account(c, keyring, "team", data))
        await database.run(lambda c: notify(c, store.CONFIG_CHANNEL, "by hand"))
        await config.wait_for(4)
        await tokens.wait_for(1)
        nursery.cancel_scope.cancel()
    expected = [f"pool:{pool.id}", f"api_key:{key.id}", f"account:{account.id}", "by hand"]
    assert config.payloads == expected
    assert tokens.payloads == [str(account.id)]
    assert_absent("\n".join(config.payloads), raw, data["tokens"]["refresh_token"])


async def test_rolled_back_changes_are_not_notified(database: Database) -> None:
    got = Collector()

    def create_then_fail(conn: psycopg.Connection[Any]) -> None:
        store.create_pool(conn, "doomed")
        raise store.InvalidInputError("no")

    async with trio.open_nursery() as nursery:
        await nursery.start(database.listen, store.CONFIG_CHANNEL, got)
        with pytest.raises(store.InvalidInputError):
            await database.run(create_then_fail)
        await database.run(lambda c: notify(c, store.CONFIG_CHANNEL, "marker"))
        assert await got.wait_for(1) == ["marker"]
        nursery.cancel_scope.cancel()


async def test_listen_is_cancelled_promptly(database: Database) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(database.listen, store.CONFIG_CHANNEL, print)
        await trio.sleep(0.2)
        start = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - start < 0.1

    async def listening() -> object:
        return await database.run(
            lambda c: c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'"
                " AND datname = current_database()"
            ).fetchone()
        )

    # Its connection is closed; the server's backend for it exits a moment later.
    with trio.move_on_after(2):
        while await listening() != (0,):
            await trio.sleep(0.02)
    assert await listening() == (0,)
