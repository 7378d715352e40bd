"""Request logs and attempts (metadata only), written in batches by the LogWriter.

Every text reaching a row is made storable here (`pooler.store.text`). Inserts are
idempotent on the request id (and attempt number): a batch retried after a
database outage, even one that had in fact committed, never duplicates a row. Not audited
and not announced: this is traffic, not configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Final

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pooler.store.common import Conn
from pooler.store.models import AttemptRow, RequestLogRow
from pooler.store.text import DEFAULT_LIMIT, storable, storable_json

LOG_COLUMNS: Final = tuple(f.name for f in fields(RequestLogRow))
ATTEMPT_COLUMNS: Final = tuple(f.name for f in fields(AttemptRow))
_JSON_AT: Final = tuple(LOG_COLUMNS.index(name) for name in ("exclusions", "routing"))
# Text columns longer than text.DEFAULT_LIMIT; every other text column is cut there.
_TEXT_LIMITS: Final = {"client_user_agent": 512}


def insert_request_logs(conn: Conn, rows: Sequence[RequestLogRow]) -> int:
    """Insert a batch; rows whose request_id is already stored are skipped. Returns the
    number of rows inserted."""
    return _insert_many(
        conn, "request_logs", LOG_COLUMNS, "request_id", [_log_params(r) for r in rows]
    )


def insert_attempts(conn: Conn, rows: Sequence[AttemptRow]) -> int:
    """Insert a batch of attempts; (request_id, attempt) already stored are skipped."""
    params = [tuple(_storable(getattr(r, name), name) for name in ATTEMPT_COLUMNS) for r in rows]
    return _insert_many(conn, "request_attempts", ATTEMPT_COLUMNS, "request_id, attempt", params)


def count_request_logs(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM request_logs").fetchone()
    return int(row[0]) if row else 0


def recent_request_logs(conn: Conn, limit: int = 100) -> list[RequestLogRow]:
    """The newest rows first (admin pages, tests)."""
    cur = conn.cursor(row_factory=class_row(RequestLogRow))
    columns = ", ".join(
        f"{name}::float8 AS {name}" if name in ("duration_ms", "ttfb_ms") else name
        for name in LOG_COLUMNS
    )
    return cur.execute(
        f"SELECT {columns} FROM request_logs ORDER BY created_at DESC, request_id LIMIT %s",
        (limit,),
    ).fetchall()


def attempts_for(conn: Conn, request_id: str) -> list[AttemptRow]:
    cur = conn.cursor(row_factory=class_row(AttemptRow))
    columns = ", ".join(
        f"{name}::float8 AS {name}" if name in ("duration_ms", "ttfb_ms") else name
        for name in ATTEMPT_COLUMNS
    )
    return cur.execute(
        f"SELECT {columns} FROM request_attempts WHERE request_id = %s ORDER BY attempt",
        (request_id,),
    ).fetchall()


def delete_request_logs_before(conn: Conn, cutoff: datetime) -> int:
    """Retention: drop request logs and attempts older than `cutoff`; returns logs dropped."""
    conn.execute("DELETE FROM request_attempts WHERE started_at < %s", (cutoff,))
    cur = conn.execute("DELETE FROM request_logs WHERE created_at < %s", (cutoff,))
    return cur.rowcount


def _storable(value: Any, column: str) -> Any:
    """Every text bound for a log row passes here (a client chose some of it: the model,
    the user agent): escaped and bounded, so the database never refuses the row."""
    if isinstance(value, str):
        return storable(value, _TEXT_LIMITS.get(column, DEFAULT_LIMIT))
    return value


def _log_params(row: RequestLogRow) -> tuple[Any, ...]:
    values = [_storable(getattr(row, name), name) for name in LOG_COLUMNS]
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = Jsonb(storable_json(dict(values[at])))
    return tuple(values)


def _insert_many(
    conn: Conn, table: str, columns: Sequence[str], conflict: str, params: list[tuple[Any, ...]]
) -> int:
    if not params:
        return 0
    placeholders = ", ".join(["%s"] * len(columns))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
            f" ON CONFLICT ({conflict}) DO NOTHING",
            params,
        )
        return max(cur.rowcount, 0)
