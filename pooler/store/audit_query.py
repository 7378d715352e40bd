"""Reading the audit trail for the console's audit log: the filter (`AuditFilter`, read and
checked from a query string by `parse_filter`), one page of events newest first with
keyset pagination on (created_at, id) (`audit_page`), and one event (`audit_event`). Both
are scoped: an owner (scope None) reads every event, an admin only the events of its Pools
(`pool_id` in the scope; instance-wide events, whose pool_id is NULL, never). Every value
reaches SQL as a parameter; the indexes of migration 0014 serve each filter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.store.common import AUDIT_OUTCOMES, Conn, InvalidInputError
from pooler.store.text import findable, unprintable

PAGE_SIZE: Final = 50
# The Pool filter's value for events that concern no one Pool (owners only see those).
INSTANCE_WIDE: Final = "instance"
FILTER_PARAMS: Final = (
    "actor",
    "action",
    "target_type",
    "target_id",
    "pool",
    "outcome",
    "since",
    "until",
)
MAX_TEXT: Final = 320
ACTION_HINT: Final = "an action such as api_key.update, or a prefix such as api_key."
_ACTION_RE: Final = re.compile(r"[a-z0-9_.]{1,100}\*?")
_TARGET_TYPE_RE: Final = re.compile(r"[a-z_]{1,40}")
_CURSOR_RE: Final = re.compile(r"(-?\d{1,18})_([0-9a-f-]{36})")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_COLUMNS: Final = (
    "e.id, e.created_at, e.actor, e.action, e.target_type, e.target_id, e.details,"
    " e.pool_id, e.outcome, p.name AS pool_name"
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: UUID
    created_at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    details: Mapping[str, Any]
    pool_id: UUID | None
    outcome: str
    pool_name: str | None  # None: instance-wide, or a Pool since deleted


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the next page holds the events strictly older than this one."""

    created_at: datetime
    id: UUID

    def encode(self) -> str:
        delta = self.created_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}_{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        found = _CURSOR_RE.fullmatch(text)
        if found is None:
            raise InvalidInputError(
                "the page link is not valid: start from the first page", "before"
            )
        try:
            ident = UUID(found.group(2))
            created_at = _EPOCH + timedelta(microseconds=int(found.group(1)))
        except (ValueError, OverflowError, OSError):
            raise InvalidInputError(
                "the page link is not valid: start from the first page", "before"
            ) from None
        return cls(created_at, ident)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What the log shows; every field None shows everything. `action` ending in `.` or
    `*` is a prefix (`api_key.` finds every key event); `pool_id` None with
    `instance_wide` finds the events of no one Pool. `since` is inclusive, `until` not."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    pool_id: UUID | None = None
    instance_wide: bool = False
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The query string's own text of each filter given (a page's links keep it).
    given: Mapping[str, str] = field(default_factory=dict)

    @property
    def action_prefix(self) -> str | None:
        if self.action is None or not self.action.endswith((".", "*")):
            return None
        return self.action.removesuffix("*")


@dataclass(frozen=True, slots=True)
class AuditPage:
    rows: list[AuditRow]
    next_cursor: Cursor | None  # None: this is the last page


def parse_filter(args: Mapping[str, str]) -> tuple[AuditFilter, Cursor | None]:
    """The filter and the page cursor (`before`) of a query string; an InvalidInputError
    whose `param` names the value at fault (blank values are no filter)."""
    given = {name: args.get(name, "").strip() for name in FILTER_PARAMS}
    given = {name: value for name, value in given.items() if value}
    pool = given.get("pool")
    since, until = _time(given.get("since"), "since"), _time(given.get("until"), "until")
    if since is not None and until is not None and since >= until:
        raise InvalidInputError("'From' must be before 'Until'", "since")
    found = AuditFilter(
        actor=_text(given.get("actor"), "actor"),
        action=_matching(given.get("action"), _ACTION_RE, "action", ACTION_HINT),
        target_type=_matching(
            given.get("target_type"), _TARGET_TYPE_RE, "target_type", "a target type such as pool"
        ),
        target_id=_text(given.get("target_id"), "target_id"),
        pool_id=None if pool in (None, INSTANCE_WIDE) else _uuid(pool, "pool"),
        instance_wide=pool == INSTANCE_WIDE,
        outcome=_outcome(given.get("outcome")),
        since=since,
        until=until,
        given=given,
    )
    before = args.get("before", "").strip()
    return found, Cursor.decode(before) if before else None


def audit_page(
    conn: Conn,
    wanted: AuditFilter,
    scope: frozenset[UUID] | None,
    cursor: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """Up to `limit` events newest first, older than `cursor` when given."""
    sql, params = page_query(wanted, scope, cursor, limit + 1)
    found = conn.cursor(row_factory=class_row(AuditRow)).execute(sql, params).fetchall()
    more = len(found) > limit
    found = found[:limit]
    last = found[-1] if more else None
    return AuditPage(found, Cursor(last.created_at, last.id) if last else None)


def page_query(
    wanted: AuditFilter, scope: frozenset[UUID] | None, cursor: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page (`limit` rows)."""
    where, params = _where(wanted, scope)
    if cursor is not None:
        where.append("(e.created_at, e.id) < (%s, %s)")
        params += [cursor.created_at, cursor.id]
    # The page is chosen on audit_events alone (an index scan); the Pool names join after.
    sql = (
        f"SELECT {_COLUMNS} FROM (SELECT * FROM audit_events e"
        f" WHERE {' AND '.join(where) or 'true'}"
        f" ORDER BY e.created_at DESC, e.id DESC LIMIT %s) e"
        f" LEFT JOIN pools p ON p.id = e.pool_id ORDER BY e.created_at DESC, e.id DESC"
    )
    return sql, [*params, limit]


def audit_event(conn: Conn, event_id: UUID, scope: frozenset[UUID] | None) -> AuditRow | None:
    """One event, if the scope may see it (else None, as if it did not exist)."""
    where = "e.id = %s" if scope is None else "e.id = %s AND e.pool_id = ANY(%s)"
    params: list[Any] = [event_id] if scope is None else [event_id, list(scope)]
    cur = conn.cursor(row_factory=class_row(AuditRow))
    return cur.execute(
        f"SELECT {_COLUMNS} FROM audit_events e LEFT JOIN pools p ON p.id = e.pool_id"
        f" WHERE {where}",
        params,
    ).fetchone()


# What still exists of a target, by its type (`live_target`), within the scope's Pools.
_LIVE: Final = {
    "pool": "SELECT 1 FROM pools WHERE id = %(id)s AND (%(all)s OR id = ANY(%(scope)s))",
    "api_key": "SELECT 1 FROM pool_api_keys WHERE id = %(id)s"
    " AND (%(all)s OR pool_id = ANY(%(scope)s))",
    "invite": "SELECT 1 FROM pool_invites WHERE id = %(id)s"
    " AND (%(all)s OR pool_id = ANY(%(scope)s))",
    "account": "SELECT 1 FROM upstream_accounts a WHERE id = %(id)s AND (%(all)s OR EXISTS"
    " (SELECT 1 FROM pool_assignments pa WHERE pa.account_id = a.id"
    " AND pa.pool_id = ANY(%(scope)s)))",
    "operator": "SELECT 1 FROM operators WHERE id = %(id)s AND %(all)s",
}


def live_target(
    conn: Conn, target_type: str | None, target_id: str | None, scope: frozenset[UUID] | None
) -> bool:
    """Whether the event's target still exists and the scope may open its page."""
    sql = _LIVE.get(target_type or "")
    ident = _maybe_uuid(target_id or "")
    if sql is None or ident is None:
        return False
    params = {"id": ident, "all": scope is None, "scope": list(scope or ())}
    return conn.execute(sql, params).fetchone() is not None


def _where(wanted: AuditFilter, scope: frozenset[UUID] | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        where.append(clause)
        params.extend(values)

    if scope is not None:
        add("e.pool_id = ANY(%s)", list(scope))
    if wanted.pool_id is not None:
        add("e.pool_id = %s", wanted.pool_id)
    if wanted.instance_wide:
        add("e.pool_id IS NULL")
    if wanted.actor is not None:
        add("e.actor = %s", wanted.actor)
    prefix = wanted.action_prefix
    if prefix is not None:
        add("e.action LIKE %s", _like_prefix(prefix))
    elif wanted.action is not None:
        add("e.action = %s", wanted.action)
    if wanted.target_type is not None:
        add("e.target_type = %s", wanted.target_type)
    if wanted.target_id is not None:
        add("e.target_id = %s", wanted.target_id)
    if wanted.outcome is not None:
        add("e.outcome = %s", wanted.outcome)
        if wanted.outcome != "ok":
            add("e.outcome <> 'ok'")  # lets the planner take the small partial index
    if wanted.since is not None:
        add("e.created_at >= %s", wanted.since)
    if wanted.until is not None:
        add("e.created_at < %s", wanted.until)
    return where, params


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _text(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_TEXT or not findable(value) or unprintable(value):
        raise InvalidInputError(
            f"{param.replace('_', ' ')} is at most {MAX_TEXT} printable characters", param
        )
    return value


def _matching(value: str | None, pattern: re.Pattern[str], param: str, hint: str) -> str | None:
    if value is None:
        return None
    if pattern.fullmatch(value) is None:
        raise InvalidInputError(f"{param.replace('_', ' ')} must be {hint}", param)
    return value


def _outcome(value: str | None) -> str | None:
    if value is not None and value not in AUDIT_OUTCOMES:
        raise InvalidInputError(f"outcome must be one of {', '.join(AUDIT_OUTCOMES)}", "outcome")
    return value


def _maybe_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def _uuid(value: str, param: str) -> UUID:
    found = _maybe_uuid(value) if len(value) <= 36 else None
    if found is None:
        raise InvalidInputError("choose a Pool from the list", param)
    return found


def _time(value: str | None, param: str) -> datetime | None:
    """An ISO date or date and time (a browser's `datetime-local`: no offset, read as
    UTC)."""
    if value is None:
        return None
    try:
        if len(value) > 40:
            raise ValueError(value)
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"'{'From' if param == 'since' else 'Until'}' must be a date and time such as"
            " 2026-12-06T14:30 (UTC)",
            param,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
