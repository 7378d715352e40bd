"""Schema migrations: numbered SQL files in `pooler/migrations/`, applied in order.

Each file is applied in its own transaction together with its row in `schema_migrations`,
so a failed migration leaves nothing half-done. A session-level advisory lock serializes
concurrent `migrate()` calls (several processes or replicas starting at once): the second
waits, then finds nothing left to do.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import psycopg

from pooler.db import map_error

# A fixed key for pg_advisory_lock: "pooler migrate" as a bigint.
MIGRATION_LOCK_KEY = 0x706F6F6C65726D67
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available_migrations() -> list[tuple[str, str]]:
    """(version, sql) for every migration file, in order; version is the file stem."""
    folder = resources.files("pooler").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if _FILE_RE.match(entry.name):
            found.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [version[:4] for version, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def migrate(url: str) -> list[str]:
    """Apply pending migrations to the database at `url`; return the versions applied.

    Raises DatabaseUnavailable / DatabaseError (pooler.db) on failure."""
    try:
        with psycopg.connect(url, autocommit=True, application_name="pooler-migrate") as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                return _apply_pending(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.Error as exc:
        raise map_error(exc) from exc


def applied_versions(conn: psycopg.Connection[Any]) -> set[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def _apply_pending(conn: psycopg.Connection[Any]) -> list[str]:
    done = applied_versions(conn)
    applied = []
    for version, text in available_migrations():
        if version in done:
            continue
        with conn.transaction():
            conn.execute(text.encode())  # no parameters: many statements in one go
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        applied.append(version)
    return applied
