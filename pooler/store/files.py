"""Files uploaded through `POST /v1/files`: their metadata only (name, size, purpose, the
account holding them). The content is never here. Not audited: this is traffic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import Conn
from pooler.store.text import storable

MAX_LIST: Final = 10_000
_COLUMNS: Final = "id, pool_id, account_id, filename, bytes, purpose, created_at"


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    pool_id: UUID
    account_id: UUID | None
    filename: str
    bytes: int
    purpose: str
    created_at: datetime


def insert_file(
    conn: Conn,
    *,
    file_id: str,
    pool_id: UUID,
    account_id: UUID,
    filename: str,
    size: int,
    purpose: str,
) -> FileRecord:
    cur = conn.cursor(row_factory=class_row(FileRecord))
    row = cur.execute(
        "INSERT INTO v1_files (id, pool_id, account_id, filename, bytes, purpose)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (pool_id, id) DO UPDATE SET account_id = EXCLUDED.account_id,"
        " filename = EXCLUDED.filename, bytes = EXCLUDED.bytes, purpose = EXCLUDED.purpose"
        f" RETURNING {_COLUMNS}",
        (file_id, pool_id, account_id, storable(filename, 255), size, storable(purpose, 64)),
    ).fetchone()
    assert row is not None
    return row


def get_file(conn: Conn, pool_id: UUID, file_id: str) -> FileRecord | None:
    cur = conn.cursor(row_factory=class_row(FileRecord))
    return cur.execute(
        f"SELECT {_COLUMNS} FROM v1_files WHERE pool_id = %s AND id = %s", (pool_id, file_id)
    ).fetchone()


def list_files(
    conn: Conn,
    pool_id: UUID,
    *,
    limit: int = MAX_LIST,
    newest_first: bool = True,
    purpose: str | None = None,
    after: str | None = None,
) -> tuple[list[FileRecord], bool]:
    """A page of the Pool's files and whether more follow; `after` is the id of the last
    file of the previous page (in the same order)."""
    limit = max(1, min(limit, MAX_LIST))
    compare, order = ("<", "DESC") if newest_first else (">", "ASC")
    conditions = ["pool_id = %(pool)s"]
    if purpose is not None:
        conditions.append("purpose = %(purpose)s")
    if after is not None:
        conditions.append(
            f"(created_at, id) {compare} (SELECT created_at, id FROM v1_files"
            " WHERE pool_id = %(pool)s AND id = %(after)s)"
        )
    cur = conn.cursor(row_factory=class_row(FileRecord))
    rows = cur.execute(
        f"SELECT {_COLUMNS} FROM v1_files WHERE {' AND '.join(conditions)}"
        f" ORDER BY created_at {order}, id {order} LIMIT %(limit)s",
        {"pool": pool_id, "purpose": purpose, "after": after, "limit": limit + 1},
    ).fetchall()
    return rows[:limit], len(rows) > limit
