"""MCP tools on the audit trail (see `pooler.mcp.tool`): `list_audit_events` and
`get_audit_event`, through the console's own query module (`pooler.store.audit_query`: the
same checked filter, scope and keyset pages).

An admin caller sees only its Pools' events, never an instance-wide one; another Pool's
event or Pool id is refused with the words an unknown one gets. Details are masked as the
console masks them (`pooler.audit_masking`), and every email (the actor's, or one in the
details) is masked with `pooler.mcp.masking.mask_email`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pooler.audit_masking import masked
from pooler.mcp.masking import mask_email
from pooler.mcp.tool import DEFAULT_LIMIT, MAX_LOG_LIMIT, McpCaller, ToolRefusal, ToolSpec
from pooler.store import audit_query as aq
from pooler.store.audit_query import AuditRow
from pooler.store.common import Conn, InvalidInputError

NO_SUCH_EVENT: Final = "no such event"
NO_SUCH_POOL: Final = "no such Pool"
EMAIL_RE: Final = re.compile(r"[^\s@<>\"',;()]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,63}")
SUMMARY_ROWS: Final = 10
_MAX_DEPTH: Final = 32

Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=aq.MAX_TEXT)]
Time = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=40),
    Field(description="ISO 8601, e.g. 2026-12-06T14:30 (UTC unless an offset is given)"),
]


class ListAuditEventsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: Text | None = Field(None, description="Who acted: an operator's email, or cli")
    action: Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9_.]{1,100}\*?$")] | (
        None
    ) = Field(None, description=aq.ACTION_HINT[0].upper() + aq.ACTION_HINT[1:])
    target_type: Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z_]{1,40}$")] | (
        None
    ) = Field(None, description="e.g. pool, api_key, account, operator, invite")
    target_id: Text | None = None
    pool_id: UUID | None = Field(None, description="Only this Pool's events")
    instance_wide: bool = Field(
        False, strict=True, description="Only events of no one Pool (owners only)"
    )
    outcome: Literal["ok", "refused", "failed"] | None = None
    since: Time | None = Field(None, description="From (inclusive)")
    until: Time | None = Field(None, description="Until (exclusive)")
    cursor: Annotated[str, StringConstraints(strict=True, max_length=100)] | None = Field(
        None, description="next_cursor of the previous page, with the same filters"
    )
    limit: Annotated[int, Field(strict=True, ge=1, le=MAX_LOG_LIMIT)] = DEFAULT_LIMIT


class AuditEventOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UUID
    created_at: datetime
    actor: str = Field(description="Who acted (emails masked)")
    action: str
    target_type: str | None
    target_id: str | None
    pool_id: UUID | None = Field(description="None: instance-wide")
    pool: str | None = Field(description="The Pool's name (None: instance-wide or deleted)")
    outcome: str
    details: dict[str, Any] = Field(description="What changed, secrets and emails masked")


class AuditEventPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[AuditEventOut] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; None: last")


class AuditEventInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID


def shown_text(value: Any, depth: int = 0) -> Any:
    """`value` (already masked for secrets) with every email in it masked, at any depth."""
    if isinstance(value, str):
        return EMAIL_RE.sub(lambda m: mask_email(m.group(0)) or "***", value)
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {str(k): shown_text(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown_text(v, depth + 1) for v in value]
    return value


def event_out(row: AuditRow) -> AuditEventOut:
    details = shown_text(masked(dict(row.details)))
    return AuditEventOut(
        id=row.id,
        created_at=row.created_at,
        actor=shown_text(masked(row.actor)),
        action=row.action,
        target_type=row.target_type,
        target_id=shown_text(masked(row.target_id)),
        pool_id=row.pool_id,
        pool=row.pool_name,
        outcome=row.outcome,
        details=details if isinstance(details, dict) else {},
    )


def _console_args(args: ListAuditEventsInput, caller: McpCaller) -> dict[str, str]:
    """The filter as the console's query string names it, for `audit_query.parse_filter`."""
    if args.pool_id is not None and not caller.may_see(args.pool_id):
        raise ToolRefusal(NO_SUCH_POOL)  # the words an unknown Pool gets (an admin's scope)
    if args.instance_wide and caller.pool_ids is not None:
        raise ToolRefusal("instance-wide events are shown to owners only")
    if args.instance_wide and args.pool_id is not None:
        raise ToolRefusal("give pool_id or instance_wide, not both")
    values = args.model_dump(exclude={"cursor", "limit", "instance_wide", "pool_id"})
    found = {name: str(v) for name, v in values.items() if v is not None}
    if args.pool_id is not None or args.instance_wide:
        found["pool"] = aq.INSTANCE_WIDE if args.instance_wide else str(args.pool_id)
    if args.cursor:
        found["before"] = args.cursor
    return found


def list_audit_events(conn: Conn, caller: McpCaller, args: ListAuditEventsInput) -> AuditEventPage:
    try:
        wanted, cursor = aq.parse_filter(_console_args(args, caller))
    except InvalidInputError as exc:
        param = {"before": "cursor", "pool": "pool_id"}.get(exc.param or "", exc.param)
        raise ToolRefusal(f"{param}: {exc}" if param else str(exc)) from None
    page = aq.audit_page(conn, wanted, caller.pool_ids, cursor, args.limit)
    return AuditEventPage(
        events=[event_out(row) for row in page.rows],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )


def get_audit_event(conn: Conn, caller: McpCaller, args: AuditEventInput) -> AuditEventOut:
    row = aq.audit_event(conn, args.event_id, caller.pool_ids)
    if row is None:
        raise ToolRefusal(NO_SUCH_EVENT)
    return event_out(row)


def line(event: AuditEventOut) -> str:
    at = event.created_at.strftime("%Y-%m-%d %H:%M:%S")
    target = " ".join(t for t in (event.target_type, event.target_id) if t)
    where = f" (Pool {event.pool})" if event.pool else ""
    return f"{at} {event.actor} {event.action} {target} {event.outcome}{where}"


def page_summary(page: AuditEventPage) -> str:
    head = f"{len(page.events)} audit event(s), newest first"
    more = "; more with next_cursor" if page.next_cursor else ""
    return "\n".join([head + more, *(line(e) for e in page.events[:SUMMARY_ROWS])])


TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="list_audit_events",
        title="List audit events",
        description="Who changed what, newest first, with the console's filters (actor, action "
        "exact or a prefix such as api_key., target, Pool or instance-wide, outcome, time "
        "range). Secrets and emails masked.",
        input_model=ListAuditEventsInput,
        output_model=AuditEventPage,
        run=list_audit_events,
        summary=page_summary,
    ),
    ToolSpec(
        name="get_audit_event",
        title="Get one audit event",
        description="One audit event by id, with what it changed (secrets and emails masked).",
        input_model=AuditEventInput,
        output_model=AuditEventOut,
        run=get_audit_event,
        summary=line,
    ),
]
