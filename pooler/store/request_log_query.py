"""Reading the request log for people: a validated filter (`LogFilter`, read from a query
string by `parse_filter`), the SQL that lists one keyset page of it newest first
(`page_sql`), one row's detail (`fetch_detail`), and the fields a row shows and exports
(`FIELDS`). Used by the console's request-log pages and their export.

SQL is built from the filter's *shape* only: every value travels as a parameter. Pages are
keyset pages on (created_at, id) descending, never OFFSET: each condition below has an
index that leads with its column and ends (created_at, id) (migration 0013), so a page
reads about `limit` index entries whatever the table's size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from psycopg.rows import dict_row

from pooler.crypto import POOL_KEY_PREFIX
from pooler.store.common import Conn, InvalidInputError

PAGE_SIZE: Final = 50
DEFAULT_RANGE: Final = timedelta(hours=24)
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
TRANSPORTS: Final = ("http", "http_sse", "http_json", "websocket")
CONTINUITY: Final = ("none", "new", "kept", "moved", "disabled")
# Known route classes (offered in the form); any short identifier is accepted, since a
# route added later must stay findable.
ROUTES: Final = (
    "responses",
    "compact",
    "files",
    "transcribe",
    "realtime_calls",
    "v1_responses",
    "v1_chat",
    "v1_images",
    "v1_transcriptions",
)
MAX_TEXT: Final = 200  # a model, error code or key name longer than this matches nothing
WORD_RE: Final = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}")
# The query-string names of the filter (the order the form shows them in).
FILTER_PARAMS: Final = (
    "pool",
    "key",
    "account",
    "status",
    "error",
    "model",
    "route",
    "transport",
    "continuity",
    "from",
    "to",
)

# What one request shows, in order: (column, label). The list's columns, the detail's facts
# and the export's fields are all taken from here, so an export never holds a field the
# detail page does not show. `pool` is the Pool's name (resolved by the caller).
FIELDS: Final = (
    ("created_at", "Time (UTC)"),
    ("request_id", "Request id"),
    ("pool", "Pool"),
    ("key_prefix", "Key"),
    ("route", "Route"),
    ("transport", "Transport"),
    ("model", "Model"),
    ("stream", "Stream"),
    ("status_code", "Status"),
    ("outcome", "Outcome"),
    ("error_code", "Error code"),
    ("account_label", "Account"),
    ("account_id", "Account id"),
    ("retries", "Retries"),
    ("continuity", "Continuity"),
    ("duration_ms", "Duration (ms)"),
    ("ttfb_ms", "Time to first byte (ms)"),
    ("input_tokens", "Input tokens"),
    ("cached_input_tokens", "Cached input tokens"),
    ("output_tokens", "Output tokens"),
    ("reasoning_tokens", "Reasoning tokens"),
    ("total_tokens", "Total tokens"),
    ("cost_usd", "API-equivalent cost (USD)"),
    ("request_bytes", "Bytes in"),
    ("response_bytes", "Bytes out"),
    ("client_request_id", "Client request id"),
    ("client_ip", "Client IP"),
    ("client_user_agent", "User agent"),
)
EXPORT_FIELDS: Final = tuple(name for name, _ in FIELDS)
# Columns read for a row (FIELDS less `pool`, plus what the pages need besides).
ROW_COLUMNS: Final = (
    "id",
    "pool_id",
    *(name for name in EXPORT_FIELDS if name != "pool"),
)
DETAIL_COLUMNS: Final = (*ROW_COLUMNS, "continuity_from", "exclusions", "routing")
_FLOAT_COLUMNS: Final = frozenset({"duration_ms", "ttfb_ms"})
# Exact decimals read as their text without trailing zeros ("0.010285"): shown and
# exported as they are stored (JSON has no exact decimal).
_DECIMAL_COLUMNS: Final = frozenset({"cost_usd"})


class FilterError(InvalidInputError):
    """A filter value that cannot be used (shown beside the filter form, as a 400)."""


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which request logs to show. `pool_ids` None: every Pool (an owner with no Pool
    chosen); otherwise only these (an admin's are always forced to theirs). `key_prefixes`
    and `account_ids` are resolved already (a key name to its prefixes, an account label to
    its ids); an empty tuple matches nothing."""

    since: datetime
    until: datetime
    pool_ids: frozenset[UUID] | None = None
    key_prefixes: tuple[str, ...] | None = None
    account_ids: tuple[UUID, ...] | None = None
    status_class: int | None = None  # 1..5
    error_code: str | None = None
    model: str | None = None
    route: str | None = None
    transport: str | None = None
    continuity: str | None = None


@dataclass(frozen=True, slots=True)
class FilterInput:
    """A query string's filter, checked: what remains to resolve against the database is
    the key (a prefix, or a name) and the account (an id, or a label)."""

    values: Mapping[str, str]  # the raw values, as the form shows them again
    since: datetime
    until: datetime
    pool_id: UUID | None = None
    key: str | None = None
    account: str | None = None
    status_class: int | None = None
    error_code: str | None = None
    model: str | None = None
    route: str | None = None
    transport: str | None = None
    continuity: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: strictly older than (created_at, id)."""

    created_at: datetime
    id: UUID

    def text(self) -> str:
        return f"{self.created_at.astimezone(UTC).isoformat()}_{self.id}"


def parse_cursor(text: str) -> Cursor | None:
    """The `after` parameter; None when empty. A bad one is a FilterError."""
    if not text:
        return None
    at, _, ident = text.rpartition("_")
    try:
        created_at = datetime.fromisoformat(at)
        row_id = UUID(ident)
    except ValueError:
        raise FilterError("The page link is damaged: start from the first page", "after") from None
    if created_at.tzinfo is None:
        raise FilterError("The page link is damaged: start from the first page", "after")
    return Cursor(created_at, row_id)


def parse_time(text: str, param: str) -> datetime | None:
    """A time from the form: ISO 8601 (`2026-12-06T04:40`, seconds and an offset optional;
    without an offset it is UTC)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise FilterError(
            f"{'From' if param == 'from' else 'To'} is not a time: use YYYY-MM-DDTHH:MM (UTC)",
            param,
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _word(params: Mapping[str, str], name: str, label: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not WORD_RE.fullmatch(value):
        raise FilterError(f"{label} holds characters no {label.lower()} has", name)
    return value


def _text(params: Mapping[str, str], name: str, label: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_TEXT or "\x00" in value:
        raise FilterError(f"{label} is longer than {MAX_TEXT} characters", name)
    return value


def _choice(params: Mapping[str, str], name: str, label: str, allowed: Sequence[str]) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if value not in allowed:
        raise FilterError(f"{label} must be one of: {', '.join(allowed)}", name)
    return value


def parse_filter(params: Mapping[str, str], now: datetime) -> FilterInput:
    """The filter of a query string (`params`: first value per name), checked. Unknown
    names are ignored; an empty value is no filter. Without `from`, the last 24 hours up to
    `to` (default: now)."""
    values = {name: params.get(name, "").strip() for name in FILTER_PARAMS}
    until = parse_time(values["to"], "to") or now
    since = parse_time(values["from"], "from") or until - DEFAULT_RANGE
    if since >= until:
        raise FilterError("From must be before To", "from")
    pool_id = None
    if values["pool"]:
        try:
            pool_id = UUID(values["pool"])
        except ValueError:
            raise FilterError("Pool is not a Pool id", "pool") from None
    status = _choice(values, "status", "Status", STATUS_CLASSES)
    return FilterInput(
        values=values,
        since=since,
        until=until,
        pool_id=pool_id,
        key=_text(values, "key", "Key"),
        account=_text(values, "account", "Account"),
        status_class=int(status[0]) if status else None,
        error_code=_word(values, "error", "Error code"),
        model=_text(values, "model", "Model"),
        route=_word(values, "route", "Route"),
        transport=_choice(values, "transport", "Transport", TRANSPORTS),
        continuity=_choice(values, "continuity", "Continuity", CONTINUITY),
    )


def resolve(conn: Conn, given: FilterInput, pool_ids: frozenset[UUID] | None) -> LogFilter:
    """`given` against the database, within `pool_ids` (the Pools the operator may see;
    None: all): a key that is not a prefix is a name (its keys' prefixes, in those Pools),
    an account that is not an id is a label."""
    key_prefixes: tuple[str, ...] | None = None
    if given.key is not None:
        if given.key.startswith(POOL_KEY_PREFIX):
            key_prefixes = (given.key,)
        else:
            key_prefixes = tuple(
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT key_prefix FROM pool_api_keys WHERE name = %s"
                    + ("" if pool_ids is None else " AND pool_id = ANY(%s)"),
                    (given.key,) if pool_ids is None else (given.key, list(pool_ids)),
                ).fetchall()
            )
    account_ids: tuple[UUID, ...] | None = None
    if given.account is not None:
        try:
            account_ids = (UUID(given.account),)
        except ValueError:
            account_ids = tuple(
                row[0]
                for row in conn.execute(
                    "SELECT id FROM upstream_accounts WHERE label = %s", (given.account,)
                ).fetchall()
            )
    pools = pool_ids
    if given.pool_id is not None:  # within pool_ids: another Pool is no Pool at all
        pools = frozenset({given.pool_id})
        if pool_ids is not None:
            pools &= pool_ids
    return LogFilter(
        since=given.since,
        until=given.until,
        pool_ids=pools,
        key_prefixes=key_prefixes,
        account_ids=account_ids,
        status_class=given.status_class,
        error_code=given.error_code,
        model=given.model,
        route=given.route,
        transport=given.transport,
        continuity=given.continuity,
    )


def _select(columns: Iterable[str]) -> str:
    return ", ".join(_column(c) for c in columns)


def _column(name: str) -> str:
    if name in _FLOAT_COLUMNS:
        return f"{name}::float8 AS {name}"
    if name in _DECIMAL_COLUMNS:
        return f"trim_scale({name})::text AS {name}"
    return name


def where_sql(flt: LogFilter, cursor: Cursor | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of `flt` (and of the rows after `cursor`) with its parameters.
    Returns `FALSE` when the filter can match nothing (an empty resolution)."""
    conds = ["created_at >= %s", "created_at < %s"]
    params: list[Any] = [flt.since, flt.until]

    def any_of(column: str, values: Sequence[Any]) -> None:
        if len(values) == 1:  # `=`: the planner walks the (column, created_at, id) index
            conds.append(f"{column} = %s")
            params.append(values[0])
        else:
            conds.append(f"{column} = ANY(%s)")
            params.append(list(values))

    for column, many in (
        ("pool_id", None if flt.pool_ids is None else sorted(flt.pool_ids)),
        ("key_prefix", flt.key_prefixes),
        ("account_id", flt.account_ids),
    ):
        if many is not None:
            if not many:
                return "FALSE", []
            any_of(column, many)
    if flt.status_class is not None:
        conds.append("(status_code / 100) = %s")  # the expression index's own expression
        params.append(flt.status_class)
    for column, value in (
        ("error_code", flt.error_code),
        ("model", flt.model),
        ("route", flt.route),
        ("transport", flt.transport),
        ("continuity", flt.continuity),
    ):
        if value is not None:
            conds.append(f"{column} = %s")
            params.append(value)
    if cursor is not None:
        conds.append("(created_at, id) < (%s, %s)")
        params.extend((cursor.created_at, cursor.id))
    return " AND ".join(conds), params


def page_sql(
    flt: LogFilter,
    cursor: Cursor | None = None,
    limit: int = PAGE_SIZE,
    *,
    columns: Sequence[str] = ROW_COLUMNS,
) -> tuple[str, list[Any]]:
    """One page of `flt`, newest first, after `cursor`: the SQL and its parameters."""
    where, params = where_sql(flt, cursor)
    sql = (
        f"SELECT {_select(columns)} FROM request_logs WHERE {where}"
        " ORDER BY created_at DESC, id DESC LIMIT %s"
    )
    return sql, [*params, limit]


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next: Cursor | None  # None: this is the last page


def fetch_page(
    conn: Conn, flt: LogFilter, cursor: Cursor | None = None, limit: int = PAGE_SIZE
) -> Page:
    """One page of rows (dicts of ROW_COLUMNS) and the cursor of the next, if any."""
    sql, params = page_sql(flt, cursor, limit + 1)
    rows = conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    last = rows[-1]
    return Page(rows, Cursor(last["created_at"], last["id"]))


def fetch_detail(
    conn: Conn, row_id: UUID, pool_ids: frozenset[UUID] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One request (dict of DETAIL_COLUMNS) and its attempts in order; None when it does
    not exist or is in no Pool of `pool_ids` (None: any)."""
    sql = f"SELECT {_select(DETAIL_COLUMNS)} FROM request_logs WHERE id = %s"
    params: list[Any] = [row_id]
    if pool_ids is not None:
        sql += " AND pool_id = ANY(%s)"
        params.append(list(pool_ids))
    cur = conn.cursor(row_factory=dict_row)
    row = cur.execute(sql, params).fetchone()
    if row is None:
        return None
    row["continuity_from_label"] = None
    if row["continuity_from"] is not None:
        found = conn.execute(
            "SELECT label FROM upstream_accounts WHERE id = %s", (row["continuity_from"],)
        ).fetchone()
        row["continuity_from_label"] = found[0] if found else None
    attempts = cur.execute(
        "SELECT attempt, account_id, account_label, started_at, status_code, outcome,"
        " error_code, ttfb_ms::float8 AS ttfb_ms, duration_ms::float8 AS duration_ms"
        " FROM request_attempts WHERE request_id = %s ORDER BY attempt",
        (row["request_id"],),
    ).fetchall()
    return row, attempts


def row_id_for(conn: Conn, request_id: str) -> UUID | None:
    """The row id of the request whose x-request-id is `request_id`, if it is logged."""
    found = conn.execute(
        "SELECT id FROM request_logs WHERE request_id = %s", (request_id,)
    ).fetchone()
    return found[0] if found else None


def check_range(flt: LogFilter, longest: timedelta) -> None:
    """Refuse (FilterError on `from`) a range longer than `longest`."""
    if flt.until - flt.since > longest:
        raise FilterError(
            f"An export covers at most {longest.days} days: narrow From and To", "from"
        )


def pool_names(conn: Conn, pool_ids: frozenset[UUID] | None) -> dict[UUID, str]:
    """The Pools of `pool_ids` (None: all) by id, in name order."""
    scope = None if pool_ids is None else list(pool_ids)
    rows = conn.execute(
        "SELECT id, name FROM pools"
        " WHERE %(scope)s::uuid[] IS NULL OR id = ANY(%(scope)s::uuid[]) ORDER BY name",
        {"scope": scope},
    ).fetchall()
    return {row[0]: row[1] for row in rows}
