"""`/admin/audit-logs`: who changed what, newest first, filtered by actor, action (exact or
a prefix such as `api_key.`), target, Pool, outcome and time range (all in the query
string, so a filtered view can be shared), 50 a page with keyset pagination; and
`/admin/audit-logs/<id>`: one event with its target (linked while it exists) and the
before/after of what it changed. Secrets are masked (`audit_view`).

An owner sees every event; an admin only those of its Pools, never an instance-wide one
(operators, the instance settings, sign-ins): another's event is a 404, as is a Pool filter
naming a Pool not theirs. A bad filter value is a 400 shown beside the filter form."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from pooler.admin_ui import audit_view
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import db, operator_required, pool_or_404, render
from pooler.store import pools
from pooler.store.audit_query import (
    ACTION_HINT,
    FILTER_PARAMS,
    INSTANCE_WIDE,
    AuditFilter,
    AuditRow,
    audit_event,
    audit_page,
    live_target,
    parse_filter,
)
from pooler.store.common import AUDIT_OUTCOMES, Conn, InvalidInputError
from pooler.store.models import Pool
from pooler.web.quart_http import current_request

HOME: Final = "/admin/audit-logs"
# Action prefixes offered as suggestions in the filter form.
ACTION_PREFIXES: Final = (
    "pool.",
    "api_key.",
    "account.",
    "upstream_account.",
    "invite.",
    "operator.",
    "console.",
    "settings.",
    "mcp.",
)
# A target's console page, by target type ({id} is the target id).
TARGET_PAGES: Final = {
    "pool": "/admin/pools/{id}",
    "api_key": "/admin/api-keys/{id}",
    "account": "/admin/upstreams/{id}",
    "operator": "/admin/operators/{id}",
    "invite": "/admin/invites",
}


def visible_pool_list(conn: Conn, scope: frozenset[UUID] | None) -> list[Pool]:
    return [p for p in pools.list_pools(conn) if scope is None or p.id in scope]


def target_href(conn: Conn, row: AuditRow, found: SignedIn) -> str | None:
    """The target's console page while it exists and the operator may open it."""
    if row.target_type == "instance":
        return "/admin/system" if found.is_owner else None
    page = TARGET_PAGES.get(row.target_type or "")
    if page is None or not live_target(conn, row.target_type, row.target_id, found.pool_ids):
        return None
    return page.format(id=row.target_id)


def audit_logs_blueprint() -> Blueprint:
    bp = Blueprint("audit_logs", __name__)

    async def list_page(
        found: SignedIn, status: int = 200, error: InvalidInputError | None = None, **context: Any
    ) -> Response:
        context.setdefault("rows", [])
        context.setdefault("next_href", None)
        context.setdefault("wanted", AuditFilter())
        choices = await db(lambda conn: visible_pool_list(conn, found.pool_ids))
        return await render(
            "audit_logs.html",
            status,
            error=error,
            pools=choices,
            outcomes=AUDIT_OUTCOMES,
            instance_wide=INSTANCE_WIDE,
            action_prefixes=ACTION_PREFIXES,
            action_hint=ACTION_HINT,
            args={name: current_request().args.get(name, "") for name in FILTER_PARAMS},
            target_label=audit_view.target_label,
            mask=audit_view.masked,
            **context,
        )

    @bp.get(HOME)
    @operator_required()
    async def index(found: SignedIn) -> Response:
        try:
            wanted, cursor = parse_filter(current_request().args)
        except InvalidInputError as exc:
            return await list_page(found, 400, exc)
        if wanted.pool_id is not None:
            pool_or_404(found, wanted.pool_id)
        page = await db(lambda conn: audit_page(conn, wanted, found.pool_ids, cursor))
        next_href = None
        if page.next_cursor is not None:
            next_href = f"{HOME}?" + urlencode(
                {**wanted.given, "before": page.next_cursor.encode()}
            )
        return await list_page(
            found,
            rows=page.rows,
            next_href=next_href,
            wanted=wanted,
            paged=cursor is not None,
            first_href=f"{HOME}?" + urlencode(wanted.given) if wanted.given else HOME,
        )

    @bp.get(f"{HOME}/<event_id>")
    @operator_required()
    async def detail(found: SignedIn, event_id: str) -> Response:
        try:
            ident = UUID(event_id)
        except ValueError:
            raise NotFound("no such event") from None

        def load(conn: Conn) -> tuple[AuditRow, str | None] | None:
            row = audit_event(conn, ident, found.pool_ids)
            return None if row is None else (row, target_href(conn, row, found))

        loaded = await db(load)
        if loaded is None:
            raise NotFound("no such event")
        row, href = loaded
        return await render(
            "audit_log.html",
            row=row,
            target_href=href,
            target_label=audit_view.target_label(row.details),
            diff=audit_view.diff_rows(row.details),
            details=audit_view.detail_rows(row.details),
            masked_actor=audit_view.masked(row.actor),
        )

    return bp
