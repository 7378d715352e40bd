import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors as pg_errors

from pooler.db import DatabaseUnavailable
from pooler.migrate import available_migrations, migrate

EXPECTED_TABLES = {
    "schema_migrations",
    "operators",
    "operator_mcp_tokens",
    "pools",
    "upstream_accounts",
    "account_secrets",
    "pool_assignments",
    "pool_api_keys",
    "quota_windows",
    "request_logs",
    "request_attempts",
    "audit_events",
    "continuity_pins",
    "account_credits",
    "instance_settings",
    "v1_files",  # 0004
    "console_sessions",  # 0006
    "operator_recovery_codes",
    "console_signin_failures",
    "operator_pool_assignments",
    "pool_invites",  # 0009
    "console_sign_ins",  # 0010
    "console_form_uses",  # 0011
    "stats_hourly",  # 0015
    "stats_pruned_hours",
    "stats_daily",  # 0016
    "pricing_catalog",  # 0018
    "alert_rules",  # 0019
    "alert_channels",
    "alert_incidents",
    "alert_deliveries",
    "alert_secrets",
}


@pytest.fixture
def empty_db_url(pg_server) -> Iterator[str]:
    url = pg_server.create_database(migrated=False)
    try:
        yield url
    finally:
        pg_server.drop_database(url)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_migrations_are_numbered_and_ordered() -> None:
    versions = [version for version, _ in available_migrations()]
    assert versions[0] == "0001_initial"
    assert versions == sorted(versions)


def test_migrate_applies_everything_once(empty_db_url: str) -> None:
    all_versions = [version for version, _ in available_migrations()]
    assert migrate(empty_db_url) == all_versions
    assert tables(empty_db_url) == EXPECTED_TABLES
    assert migrate(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert sorted(version for version, _ in rows) == all_versions
    assert all(applied_at is not None for _, applied_at in rows)


def test_template_copies_are_already_migrated(db_url: str) -> None:
    assert migrate(db_url) == []
    assert tables(db_url) == EXPECTED_TABLES


def test_concurrent_migrations_apply_each_version_once(empty_db_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    all_versions = [version for version, _ in available_migrations()]
    assert sorted(results, key=len) == [[], [], all_versions]
    assert tables(empty_db_url) == EXPECTED_TABLES


def test_schema_rejects_nonsense(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(pg_errors.CheckViolation):
            conn.execute("INSERT INTO pools (name, strategy) VALUES ('p', 'random')")
        with pytest.raises(pg_errors.CheckViolation):
            conn.execute("INSERT INTO pools (name, retry_budget) VALUES ('p', -1)")
        conn.execute("INSERT INTO pools (name) VALUES ('p')")
        with pytest.raises(pg_errors.UniqueViolation):
            conn.execute("INSERT INTO pools (name) VALUES ('p')")
        row = conn.execute(
            "SELECT strategy, status, quota_threshold_percent, retry_budget,"
            " max_in_flight_per_account FROM pools"
        ).fetchone()
        assert row == ("least_used", "active", 100, 3, 32)
        with pytest.raises(pg_errors.CheckViolation):
            conn.execute(
                "INSERT INTO upstream_accounts (label, chatgpt_account_id, lifecycle)"
                " VALUES ('a', 'acct', 'sleeping')"
            )


def test_migrate_reports_unreachable_server() -> None:
    with pytest.raises(DatabaseUnavailable):
        migrate("postgresql://postgres@/pooler?host=/nonexistent-socket-dir&connect_timeout=2")
