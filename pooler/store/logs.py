"""Request logs and attempts (metadata only), written in batches by the LogWriter.

Every text reaching a row is made storable here (`pooler.store.text`). Inserts are
idempotent on the request id (and attempt number): a batch retried after a
database outage, even one that had in fact committed, never duplicates a row. Not audited
and not announced: this is traffic, not configuration.

A batch goes in by COPY (one statement per table, whatever its size: an INSERT per row
cost ~35 µs of the gateway's CPU per row in psycopg), in a transaction (a savepoint when the
caller holds one); only when a row is already stored (the retried batch above) does it roll
back and the batch go in again by INSERT ... ON CONFLICT DO NOTHING.

The batch's own transaction commits without waiting for its WAL to reach the disk
(`synchronous_commit` off for it alone, set in the same round trip as its BEGIN): a fsync
per batch cost PostgreSQL ~85 µs of CPU on the core it shares with the gateway. A crash of
the gateway loses nothing more by it (the server has the rows); a crash of the server or the
machine may lose the batches committed in its last 600 ms at most (three rounds of the WAL
writer), the same kind of window the writer's buffer already is (README: request logs are
written behind). A savepoint in a caller's transaction keeps the caller's setting.

The COPY's text (`add_copy_line`) is made by the caller, before the worker thread: the gateway
formats a batch on its event loop in small steps (`runtime_store.store_request_records`), so
the thread that runs the COPY only hands bytes to libpq. Formatting ~40 rows in the thread
kept it running Python (~1.5 ms a batch) while the event loop's thread waited for the GIL
(a waiter gets it only when the holder blocks or after the 5 ms switch interval).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import psycopg
from psycopg import _copy_base, adapt
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from pooler.store.common import Conn
from pooler.store.models import AttemptRow, RequestLogRow
from pooler.store.text import DEFAULT_LIMIT, storable, storable_json

LOG_COLUMNS: Final = tuple(f.name for f in fields(RequestLogRow))
ATTEMPT_COLUMNS: Final = tuple(f.name for f in fields(AttemptRow))
_JSON_AT: Final = tuple(LOG_COLUMNS.index(name) for name in ("exclusions", "routing"))
# Text columns longer than text.DEFAULT_LIMIT; every other text column is cut there.
_TEXT_LIMITS: Final = {"client_user_agent": 512}
_TEXT_TYPES: Final = ("str", "str | None")
# (position, limit) of every text column, in LOG_COLUMNS / ATTEMPT_COLUMNS order.
_LOG_TEXT_AT: Final = tuple(
    (i, _TEXT_LIMITS.get(f.name, DEFAULT_LIMIT))
    for i, f in enumerate(fields(RequestLogRow))
    if f.type in _TEXT_TYPES
)
_ATTEMPT_TEXT_AT: Final = tuple(
    (i, DEFAULT_LIMIT) for i, f in enumerate(fields(AttemptRow)) if f.type in _TEXT_TYPES
)
_LOG_TABLE: Final = ("request_logs", LOG_COLUMNS, "request_id")
_ATTEMPT_TABLE: Final = ("request_attempts", ATTEMPT_COLUMNS, "request_id, attempt")
# JSON that `storable_json` would leave as it is (see `json_text`): printable ASCII, no
# escape, no run of more than DEFAULT_LIMIT characters without a quote.
_LONG_RUN: Final = re.compile(rb'[^"]{%d}' % (DEFAULT_LIMIT + 1))
_JSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

# psycopg's own COPY text formatter, the one `Copy.write_row` runs (its C version), with the
# default adapters: our connections register none of their own, and write UTF-8. A private
# name of psycopg's, so checked at import against the bytes write_row makes (`_check_format`).
_format_row_text: Final = _copy_base.format_row_text
_TRANSFORMER: Final = adapt.Transformer()


def add_copy_line(out: bytearray, values: Sequence[Any]) -> None:
    """Append to `out` the COPY FROM STDIN text-format line of `values`, the bytes
    `Copy.write_row(values)` would send."""
    _format_row_text(values, _TRANSFORMER, out)


def copy_lines(rows: Sequence[Sequence[Any]]) -> bytes:
    out = bytearray()
    for values in rows:
        _format_row_text(values, _TRANSFORMER, out)
    return bytes(out)


def _check_format() -> None:
    """Refuse to start if psycopg's formatter moved or formats differently."""
    sample = ["a\tb\\c\né", None, 7, 6.049, True, datetime(2026, 1, 2, tzinfo=UTC)]
    expected = b"a\\tb\\\\c\\n\xc3\xa9\t\\N\t7\t6.049\tt\t2026-01-02 00:00:00+00:00\n"
    try:
        line = copy_lines([sample])
    except Exception:  # any failure means the shape changed
        line = None
    if line != expected:
        raise RuntimeError(f"psycopg changed: _copy_base.format_row_text gives {line!r}")


_check_format()


def insert_request_logs(conn: Conn, rows: Sequence[RequestLogRow]) -> int:
    """Insert a batch; rows whose request_id is already stored are skipped. Returns the
    number of rows inserted."""
    values = [log_values([getattr(r, name) for name in LOG_COLUMNS]) for r in rows]
    return insert_log_values(conn, values, [])[0]


def insert_attempts(conn: Conn, rows: Sequence[AttemptRow]) -> int:
    """Insert a batch of attempts; (request_id, attempt) already stored are skipped."""
    values = [attempt_values([getattr(r, name) for name in ATTEMPT_COLUMNS]) for r in rows]
    return insert_log_values(conn, [], values)[1]


def log_values(values: list[Any]) -> list[Any]:
    """A request-log row's values (LOG_COLUMNS order, changed in place) made storable:
    every text escaped and bounded, the JSON columns as storable JSON text."""
    for at, limit in _LOG_TEXT_AT:
        text = values[at]
        if text is not None:
            values[at] = storable(text, limit)
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = json_text(dict(values[at]))
    return values


def attempt_values(values: list[Any]) -> list[Any]:
    """An attempt row's values (ATTEMPT_COLUMNS order, changed in place) made storable."""
    for at, limit in _ATTEMPT_TEXT_AT:
        text = values[at]
        if text is not None:
            values[at] = storable(text, limit)
    return values


def json_text(value: Any) -> str:
    """`value` as the JSON text of `storable_json(value)`. Fast path: the value's JSON
    (orjson) is printable ASCII without an escape (so no string holds an unprintable
    character), no string can be longer than the limit (no run of more than it without a
    quote), and it nests less than storable_json's depth (fewer brackets): then
    storable_json would change nothing. Anything else takes storable_json."""
    try:
        raw = orjson.dumps(value, option=_JSON_OPTIONS)
    except TypeError:  # a type orjson would write differently from storable_json
        raw = b""
    if (
        raw
        and raw.isascii()
        and b"\\" not in raw
        and b"\x7f" not in raw
        and raw.count(b"[") + raw.count(b"{") < 32
        and _LONG_RUN.search(raw) is None
    ):
        return raw.decode()
    clean = storable_json(value)
    try:
        return orjson.dumps(clean).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(clean)


def insert_log_values(
    conn: Conn, logs: Sequence[Sequence[Any]], attempts: Sequence[Sequence[Any]]
) -> tuple[int, int]:
    """Store request-log rows and attempt rows (values made storable by `log_values` and
    `attempt_values`): by COPY in a savepoint; if one is already stored, by INSERT ... ON
    CONFLICT DO NOTHING. Returns the rows inserted (logs, attempts)."""
    if not logs and not attempts:
        return 0, 0
    return insert_log_copy(
        conn,
        copy_lines(logs),
        copy_lines(attempts),
        lambda: (logs, attempts),
    )


def insert_log_copy(
    conn: Conn,
    logs: bytes,
    attempts: bytes,
    values: Callable[[], tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]],
) -> tuple[int, int]:
    """`insert_log_values` of rows already formatted (`copy_lines` of storable values);
    `values()` gives the same rows as values, needed only when one is already stored.
    Returns the rows inserted (logs, attempts)."""
    if not logs and not attempts:
        return 0, 0
    try:
        with _batch_transaction(conn):
            return _copy(conn, _LOG_TABLE, logs), _copy(conn, _ATTEMPT_TABLE, attempts)
    except pg_errors.UniqueViolation:  # a batch retried after it had in fact committed
        log_rows, attempt_rows = values()
        with _batch_transaction(conn):
            return (
                _insert_many(conn, *_LOG_TABLE, log_rows),
                _insert_many(conn, *_ATTEMPT_TABLE, attempt_rows),
            )


@contextmanager
def _batch_transaction(conn: Conn) -> Iterator[None]:
    """A savepoint inside the caller's transaction, or (autocommit) a transaction of its own
    whose commit does not wait for the WAL flush (module doc)."""
    if not conn.autocommit:
        with conn.transaction():
            yield
        return
    conn.execute("BEGIN; SET LOCAL synchronous_commit TO off")  # one round trip
    try:
        yield
    except BaseException:
        if not conn.closed and not conn.broken:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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


def _copy(conn: Conn, table: tuple[str, Sequence[str], str], lines: bytes) -> int:
    if not lines:
        return 0
    name, columns, _ = table
    with conn.cursor() as cur:
        with cur.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write(lines)
        return max(cur.rowcount, 0)


def _insert_many(
    conn: Conn, table: str, columns: Sequence[str], conflict: str, params: Sequence[Sequence[Any]]
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
