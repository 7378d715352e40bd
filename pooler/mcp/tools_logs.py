"""MCP tools on what happened (see `pooler.mcp.tool`): the request log
(`list_request_logs`, `get_request_log`, `explain_request`) and the audit trail
(`list_audit_events`, `get_audit_event`, from `pooler.mcp.audit_tools`).

The request-log tools read through the console's own query module
(`pooler.store.request_log_query`): the same checked filter (`parse_filter`, `resolve`),
the same keyset pages, the same fields. An admin caller sees only its Pools' rows; another
Pool's request or Pool id is refused with the words an unknown one gets. Metadata only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pooler.mcp import audit_tools
from pooler.mcp.explain import Explanation, duration, explain
from pooler.mcp.log_models import (
    RequestLogFull,
    RequestLogItem,
    full_from_rows,
    item_from_row,
)
from pooler.mcp.tool import DEFAULT_LIMIT, MAX_LOG_LIMIT, McpCaller, ToolRefusal, ToolSpec
from pooler.store import request_log_query as q
from pooler.store.common import Conn

NO_SUCH_REQUEST: Final = "no such request"
NO_SUCH_POOL: Final = "no such Pool"
# The console's query-string names of the filter, by this tool's argument names.
_CONSOLE_NAMES: Final = {
    "pool_id": "pool",
    "since": "from",
    "until": "to",
    "status_class": "status",
    "error_code": "error",
}
_CURSOR_SEP: Final = "|"
SUMMARY_ROWS: Final = 10

Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=q.MAX_TEXT)]
Word = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64, pattern=f"^{q.WORD_RE.pattern}$"),
]
Time = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=40),
    Field(description="ISO 8601, e.g. 2026-12-06T14:30 (UTC unless an offset is given)"),
]
LogLimit = Annotated[int, Field(strict=True, ge=1, le=MAX_LOG_LIMIT)]


class ListRequestLogsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_id: UUID | None = Field(None, description="Only this Pool's requests")
    key: Text | None = Field(None, description="A Pool key's prefix (sk-cxp-...) or its name")
    account: Text | None = Field(None, description="An upstream account's id or label")
    status_class: Literal["1xx", "2xx", "3xx", "4xx", "5xx"] | None = None
    error_code: Word | None = None
    model: Text | None = None
    route: Word | None = Field(None, description="A route class: " + ", ".join(q.ROUTES))
    transport: Literal["http", "http_sse", "http_json", "websocket"] | None = None
    continuity: Literal["none", "new", "kept", "moved", "disabled"] | None = None
    since: Time | None = Field(None, description="From (inclusive); default 24 h before until")
    until: Time | None = Field(None, description="Until (exclusive); default now")
    cursor: Annotated[str, StringConstraints(strict=True, max_length=200)] | None = Field(
        None, description="next_cursor of the previous page, with the same filters"
    )
    limit: LogLimit = DEFAULT_LIMIT


class RequestLogPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RequestLogItem] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; None: last")
    since: datetime
    until: datetime


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[
        str, StringConstraints(strict=True, min_length=1, max_length=q.MAX_TEXT)
    ] = Field(description="The x-request-id (req_...) or the row's id")


def list_request_logs(conn: Conn, caller: McpCaller, args: ListRequestLogsInput) -> RequestLogPage:
    if args.pool_id is not None and not caller.may_see(args.pool_id):
        raise ToolRefusal(NO_SUCH_POOL)  # the words an unknown Pool gets (an admin's scope)
    pools = q.pool_names(conn, caller.pool_ids)
    since, cursor = args.since, None
    try:
        if args.cursor:
            pinned, cursor = _read_cursor(args.cursor)
            since = since or pinned
        given = q.parse_filter(_console_params(args, since), datetime.now(UTC))
    except q.FilterError as exc:
        raise ToolRefusal(_refusal_text(exc)) from None
    page = q.fetch_page(conn, q.resolve(conn, given, caller.pool_ids), cursor, args.limit)
    return RequestLogPage(
        requests=[item_from_row(row, pools.get(row["pool_id"])) for row in page.rows],
        next_cursor=(
            f"{given.since.isoformat()}{_CURSOR_SEP}{page.next.text()}" if page.next else None
        ),
        since=given.since,
        until=given.until,
    )


def _console_params(args: ListRequestLogsInput, since: str | None) -> dict[str, str]:
    """The filter as the console's query string names it, for `parse_filter`."""
    values = args.model_dump(exclude={"cursor", "limit"}, exclude_none=True)
    values["since"] = since
    return {_CONSOLE_NAMES.get(name, name): str(v) for name, v in values.items() if v}


def _read_cursor(text: str) -> tuple[str, q.Cursor | None]:
    """A cursor carries the page's `since`, so that a default range ("the last 24 hours")
    does not move on with the clock between pages and skip rows at its old end."""
    since, sep, rest = text.partition(_CURSOR_SEP)
    if not sep or not since:
        raise q.FilterError("The page link is damaged: start from the first page", "after")
    q.parse_time(since, "from")
    return since, q.parse_cursor(rest)


def _refusal_text(exc: q.FilterError) -> str:
    names = {"from": "since", "to": "until", "after": "cursor", "error": "error_code"}
    param = names.get(exc.param or "", exc.param or "")
    text = str(exc).replace("From", "since").replace("To", "until").replace("page link", "cursor")
    return f"{param}: {text}" if param else text


def load_request(conn: Conn, caller: McpCaller, request_id: str) -> RequestLogFull:
    """One request the caller may see, by its x-request-id or row id; a ToolRefusal with
    the same words for an unknown one and another Pool's."""
    row_id = _maybe_uuid(request_id) or q.row_id_for(conn, request_id)
    found = q.fetch_detail(conn, row_id, caller.pool_ids) if row_id else None
    if found is None:
        raise ToolRefusal(NO_SUCH_REQUEST)
    row, attempts = found
    pool = q.pool_names(conn, caller.pool_ids).get(row["pool_id"]) if row["pool_id"] else None
    return full_from_rows(row, attempts, pool)


def get_request_log(conn: Conn, caller: McpCaller, args: RequestInput) -> RequestLogFull:
    return load_request(conn, caller, args.request_id)


def explain_request(conn: Conn, caller: McpCaller, args: RequestInput) -> Explanation:
    return explain(load_request(conn, caller, args.request_id))


def _maybe_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def line(item: RequestLogItem) -> str:
    """One request in one line."""
    at = item.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    facts = [item.route, item.model, item.status_code, item.error_code, item.account_label]
    took = f" {duration(item.duration_ms)}" if item.duration_ms is not None else ""
    return f"{at} {item.request_id} " + " ".join(str(f) for f in facts if f) + took


def page_summary(page: RequestLogPage) -> str:
    since, until = (t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for t in (page.since, page.until))
    head = f"{len(page.requests)} request(s) from {since} to {until} UTC, newest first"
    more = "; more with next_cursor" if page.next_cursor else ""
    shown = [line(item) for item in page.requests[:SUMMARY_ROWS]]
    rest = len(page.requests) - len(shown)
    return "\n".join([head + more, *shown, *([f"... and {rest} more"] if rest > 0 else [])])


def detail_summary(full: RequestLogFull) -> str:
    attempts = [
        f"attempt {a.attempt}: {a.account_label} {a.status_code or ''} {a.error_code or ''}".strip()
        for a in full.attempts
    ]
    return "\n".join([line(full.request), *attempts])


TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="list_request_logs",
        title="List request logs",
        description="Requests the gateway served or refused, newest first, with the console's "
        "filters (Pool, key prefix or name, account, status class, error code, model, route, "
        "transport, continuity, time range; default the last 24 hours). Metadata only.",
        input_model=ListRequestLogsInput,
        output_model=RequestLogPage,
        run=list_request_logs,
        summary=page_summary,
    ),
    ToolSpec(
        name="get_request_log",
        title="Get one request log",
        description="One request by its x-request-id: the row, its attempts in order (account, "
        "status, error, time to first byte, duration) and how its account was chosen (strategy, "
        "candidates with verdicts, continuity and why it moved, accounts left out).",
        input_model=RequestInput,
        output_model=RequestLogFull,
        run=get_request_log,
        summary=detail_summary,
    ),
    ToolSpec(
        name="explain_request",
        title="Explain a request",
        description="Why did request X fail, or go where it went? One request's whole story in "
        "plain words (accounts tried, failover, continuity, tokens), with the same facts "
        "structured.",
        input_model=RequestInput,
        output_model=Explanation,
        run=explain_request,
        summary=lambda out: out.story,
    ),
    *audit_tools.TOOLS,
]
