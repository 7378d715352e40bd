"""The request log as a file (CSV or JSON Lines), streamed: rows are read in keyset batches
of `BATCH` (one short transaction each, in a worker thread) and each batch is written to
the client before the next is read, through the server's own `send` (the gateway's push
model, `pooler.web.quart_http`), which waits while the client's socket is full. So memory
holds one batch whatever the range, and a client that leaves stops the reading (a task
watches for the disconnect).

Fields: exactly `request_log_query.EXPORT_FIELDS` (what the detail page shows), metadata
only. CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR
first: a client chose the model and user agent) are prefixed with `'`.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import orjson
import trio
from quart.wrappers import Response

from pooler.admin_ui.errors import SECURITY_HEADERS
from pooler.admin_ui.pages import db
from pooler.store import request_log_query as q
from pooler.web.quart_http import PUSHED, current_request

BATCH: Final = 1000
CONTENT_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def export_row(row: dict[str, Any], pools: dict[UUID, str]) -> dict[str, Any]:
    """A fetched row as exported: EXPORT_FIELDS in order, the Pool by name."""
    pool_id = row.get("pool_id")
    named = {**row, "pool": pools.get(pool_id) if pool_id else None}
    return {name: named.get(name) for name in q.EXPORT_FIELDS}


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA_START):
        return "'" + text
    return text


def csv_lines(rows: list[dict[str, Any]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(q.EXPORT_FIELDS)
    for row in rows:
        writer.writerow([csv_cell(row[name]) for name in q.EXPORT_FIELDS])
    return out.getvalue().encode("utf-8")


def jsonl_lines(rows: list[dict[str, Any]], header: bool) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def encoder(kind: str) -> Callable[[list[dict[str, Any]], bool], bytes]:
    return csv_lines if kind == "csv" else jsonl_lines


def filename(kind: str, now: datetime) -> str:
    return f"request-logs-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.{kind}"


async def stream(kind: str, flt: q.LogFilter, pools: dict[UUID, str]) -> Response:
    """Answer with the export of `flt` (pushed; returns PUSHED)."""
    request = current_request()
    send = request.send
    encode = encoder(kind)
    headers = [
        ("content-type", CONTENT_TYPES[kind]),
        ("content-disposition", f'attachment; filename="{filename(kind, datetime.now(UTC))}"'),
        ("cache-control", "no-store"),
        *SECURITY_HEADERS,
    ]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )

    async def pump(cancel_scope: trio.CancelScope) -> None:
        cursor: q.Cursor | None = None
        first = True
        while True:
            page = await db(functools.partial(q.fetch_page, flt=flt, cursor=cursor, limit=BATCH))
            body = encode([export_row(row, pools) for row in page.rows], first)
            first = False
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if page.next is None:
                break
            cursor = page.next
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await request.wait_for_disconnect()
            nursery.cancel_scope.cancel()  # the client left: read no further

        nursery.start_soon(watch)
        await pump(nursery.cancel_scope)
    return PUSHED
