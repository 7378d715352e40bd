"""`/admin/request-logs`: the request log, newest first, filtered by what the query string
says (so a view can be shared), in keyset pages of 50; `/admin/request-logs/<id>`: one
request's whole story (attempts, routing, tokens, bytes, client facts); and
`/admin/request-logs/export.csv|.jsonl`: the filtered log streamed as a file.

An admin sees only its Pools' rows: the filter is always narrowed to `found.pool_ids`,
another Pool chosen in the filter is a 404, another Pool's request is a 404. Metadata only:
nothing here reads a body, and the export has exactly the fields the detail page shows
(`request_log_query.FIELDS`). The SQL lives in `pooler.store.request_log_query`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler.admin_ui import console, log_export
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, pool_or_404, render
from pooler.store import request_log_query as q
from pooler.store.audit import record_event
from pooler.store.common import Conn
from pooler.web.quart_http import current_request

HOME: Final = "/admin/request-logs"
EXPORT_RANGE: Final = timedelta(days=31)
FORM_ERROR: Final = "form"


def query_params() -> dict[str, str]:
    """The filter's names and the page cursor, first value each, from the query string."""
    args = current_request().args
    return {name: str(args.get(name, "")) for name in (*q.FILTER_PARAMS, "after")}


def filter_query(values: dict[str, str], **extra: str) -> str:
    """The query string of `values` (empty ones left out) and `extra`."""
    pairs = [(name, values[name]) for name in q.FILTER_PARAMS if values.get(name)]
    pairs.extend((name, value) for name, value in extra.items() if value)
    return urlencode(pairs)


def pinned(values: dict[str, str], given: q.FilterInput) -> dict[str, str]:
    """`values` with the time range written out: the next pages keep the range the first
    one had (a default "last 24 hours" would otherwise move on with the clock, and rows
    at its old end could be skipped)."""
    since = given.since.replace(microsecond=0)
    until = given.until.replace(microsecond=0) + timedelta(seconds=1)
    return {
        **values,
        "from": values.get("from") or since.strftime("%Y-%m-%dT%H:%M:%S"),
        "to": values.get("to") or until.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def read_filter(found: SignedIn, params: dict[str, str]) -> q.FilterInput:
    """The checked filter (FilterError when a value is bad); another Pool's id is a 404."""
    given = q.parse_filter(params, datetime.now(UTC))
    if given.pool_id is not None:
        pool_or_404(found, given.pool_id)
    return given


def request_logs_blueprint() -> Blueprint:
    bp = Blueprint("request_logs", __name__)

    async def list_page(
        found: SignedIn,
        params: dict[str, str],
        given: q.FilterInput | None,
        error: q.FilterError | None = None,
    ) -> Response:
        cursor = q.parse_cursor(params["after"]) if given is not None else None

        def load(conn: Conn) -> tuple[dict[UUID, str], q.Page | None]:
            pools = q.pool_names(conn, found.pool_ids)
            if given is None:
                return pools, None
            flt = q.resolve(conn, given, found.pool_ids)
            return pools, q.fetch_page(conn, flt, cursor)

        pools, page = await db(load)
        values = dict(given.values) if given is not None else params
        return await render(
            "request_logs.html",
            200 if error is None else 400,
            pools=pools,
            values=values,
            page=page,
            error=error,
            error_param=(error.param or FORM_ERROR) if error else None,
            since=given.since if given else None,
            until=given.until if given else None,
            first_page=filter_query(values) if params["after"] else None,
            next_page=(
                filter_query(pinned(values, given), after=page.next.text())
                if page and page.next and given
                else None
            ),
            export_query=filter_query(values),
            choices={
                "status": q.STATUS_CLASSES,
                "transport": q.TRANSPORTS,
                "continuity": q.CONTINUITY,
                "routes": q.ROUTES,
            },
            fmt=display,
        )

    @bp.get(HOME)
    @operator_required()
    async def list_logs(found: SignedIn) -> Response:
        params = query_params()
        try:
            given = read_filter(found, params)
            q.parse_cursor(params["after"])
        except q.FilterError as exc:
            return await list_page(found, params, None, exc)
        return await list_page(found, params, given)

    @bp.get(f"{HOME}/<uuid:log_id>")
    @operator_required()
    async def detail(found: SignedIn, log_id: UUID) -> Response:
        def load(conn: Conn) -> tuple[Any, dict[UUID, str]] | None:
            found_row = q.fetch_detail(conn, log_id, found.pool_ids)
            if found_row is None:
                return None
            return found_row, q.pool_names(conn, found.pool_ids)

        loaded = await db(load)
        if loaded is None:
            raise NotFound("no such request")
        (row, attempts), pools = loaded
        row["pool"] = pools.get(row["pool_id"]) if row["pool_id"] else None
        return await render(
            "request_log.html",
            row=row,
            attempts=attempts,
            fields=q.FIELDS,
            routing=routing_story(row.get("routing")),
            exclusions=exclusion_list(row.get("exclusions")),
            fmt=display,
        )

    async def prepare(found: SignedIn, kind: str) -> Response:
        """Check and resolve the export's filter under the `admin` slot; the answer is an
        `ExportReady` to stream (after the slot is given back), or the list page with the
        refusal."""
        params = query_params()
        try:
            given = read_filter(found, params)

            def load(conn: Conn) -> tuple[dict[UUID, str], q.LogFilter]:
                flt = q.resolve(conn, given, found.pool_ids)
                q.check_range(flt, EXPORT_RANGE)
                # Who took a copy of the log, and of what (the filter as given).
                record_event(
                    conn,
                    actor=found.operator.email,
                    action="request_logs.export",
                    target_type="request_logs",
                    target_id=kind,
                    details={
                        "format": kind,
                        "from": flt.since.isoformat(),
                        "to": flt.until.isoformat(),
                        "filter": {k: v for k, v in given.values.items() if v},
                    },
                )
                return q.pool_names(conn, found.pool_ids), flt

            pools, flt = await db(load)
        except q.FilterError as exc:
            return await list_page(found, params, None, exc)
        return log_export.ExportReady(kind, flt, pools, console.gateway())

    @operator_required()
    async def prepare_csv(found: SignedIn) -> Response:
        return await prepare(found, "csv")

    @operator_required()
    async def prepare_jsonl(found: SignedIn) -> Response:
        return await prepare(found, "jsonl")

    # Not decorated: the decorated `prepare_*` holds one of the few `admin` slots only to
    # check the operator and the filter; the file is written after (an export can take
    # minutes, or stall on a client that stops reading: Hypercorn's socket writes cannot
    # be cancelled), with its own bound on how many run at once (log_export.stream).
    @bp.get(f"{HOME}/export.csv")
    async def export_csv() -> Response:
        return await log_export.answer(await prepare_csv())

    @bp.get(f"{HOME}/export.jsonl")
    async def export_jsonl() -> Response:
        return await log_export.answer(await prepare_jsonl())

    return bp


def display(value: Any) -> str:
    """A stored value as the pages show it: "—" for nothing, times in UTC to the
    millisecond, numbers with thousands separators."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def routing_story(routing: Any) -> dict[str, Any] | None:
    """The stored routing explanation, shaped for the page: its strategy, each candidate
    (label, verdict, and anything else it says as text), and every other fact."""
    if not isinstance(routing, dict):
        return None
    candidates = []
    for item in routing.get("candidates") or ():
        if isinstance(item, dict):
            rest = {k: v for k, v in item.items() if k not in ("label", "verdict")}
            candidates.append(
                {
                    "label": item.get("label"),
                    "verdict": item.get("verdict"),
                    "more": ", ".join(f"{k}: {v}" for k, v in sorted(rest.items())),
                }
            )
    others = [
        (str(k), v if isinstance(v, str | int | float | bool) or v is None else str(v))
        for k, v in sorted(routing.items())
        if k not in ("strategy", "candidates")
    ]
    return {"strategy": routing.get("strategy"), "candidates": candidates, "others": others}


def exclusion_list(exclusions: Any) -> list[tuple[str, str]]:
    """The stored exclusions (account label -> code, or codes) as (label, codes) pairs."""
    if not isinstance(exclusions, dict):
        return []
    return sorted(
        (str(label), ", ".join(map(str, code)) if isinstance(code, list) else str(code))
        for label, code in exclusions.items()
    )
