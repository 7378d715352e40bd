"""The request log as a file (CSV or JSON Lines), streamed: rows are read in keyset batches
of `BATCH` (one short transaction each, in a worker thread) and each batch is written to
the client before the next is read, through the server's own `send` (the gateway's push
model, `pooler.web.quart_http`), which waits while the client's socket is full. So memory
holds one batch whatever the range, and a client that leaves stops the reading (a task
watches for the disconnect).

It runs after the request has given back its `admin` admission slot (see
`request_logs.py`): Hypercorn (0.18) shields its socket writes from cancellation, so a
client that stops reading without leaving holds its export's task for as long as its
connection lives, and must not hold one of the console's few slots meanwhile. At most
`MAX_EXPORTS` run at once per process (more: 429), and their batches are read one at a
time.

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
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import orjson
import trio
from quart.wrappers import Response

from pooler.admin_ui.errors import SECURITY_HEADERS, add_security_headers
from pooler.store import request_log_query as q
from pooler.web.quart_http import PUSHED, current_request

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

BATCH: Final = 1000
# Exports streaming at once in this process (more: 429), and one batch read at a time
# across them (the database pool also serves the gateway's traffic).
MAX_EXPORTS: Final = 4
_BATCH_READS = trio.CapacityLimiter(1)
_running = 0
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


class ExportReady(Response):
    """What the checked export request answers with: the export to stream (not a response
    to send as is; `answer` streams it)."""

    def __init__(
        self, kind: str, flt: q.LogFilter, pools: dict[UUID, str], gateway: Gateway
    ) -> None:
        super().__init__(b"", status=200)
        self.kind, self.flt, self.pools, self.gateway = kind, flt, pools, gateway


async def answer(response: Response) -> Response:
    """Stream `response` if it is an ExportReady (returns PUSHED), else return it."""
    global _running
    if not isinstance(response, ExportReady):
        return response
    if _running >= MAX_EXPORTS:
        busy = Response(
            f"{MAX_EXPORTS} exports are running: try again when one has finished.\n",
            status=429,
            headers={"retry-after": "10"},
            content_type="text/plain; charset=utf-8",
        )
        return add_security_headers(busy)
    _running += 1
    try:
        return await stream(response)
    finally:
        _running -= 1


async def stream(ready: ExportReady) -> Response:
    """Write the export of `ready` through the server's `send`; returns PUSHED."""
    request = current_request()
    send = request.send
    encode = encoder(ready.kind)
    now = datetime.now(UTC)
    headers = [
        ("content-type", CONTENT_TYPES[ready.kind]),
        ("content-disposition", f'attachment; filename="{filename(ready.kind, now)}"'),
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
            fetch = functools.partial(q.fetch_page, flt=ready.flt, cursor=cursor, limit=BATCH)
            async with _BATCH_READS:
                page = await ready.gateway.db.run(fetch)
            body = encode([export_row(row, ready.pools) for row in page.rows], first)
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
