"""What the `/admin/api-keys` pages read and check, apart from the web: the keys an operator
may see with their requests of the last 24 hours (one query), one key scoped to the
operator's Pools, and the key form parsed with the store's own rules (the CLI's parsers),
each refusal kept beside its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from uuid import UUID

from psycopg.rows import class_row

from pooler.store import keys
from pooler.store.common import Conn, NotFoundError, StoreError
from pooler.store.keys import EFFORT_MODES, REASONING_EFFORTS, EffortPolicy
from pooler.store.models import ApiKey

STATUS_ORDER: Final = "CASE k.status WHEN 'active' THEN 0 WHEN 'paused' THEN 1 ELSE 2 END"
EFFORT_WORDS: Final = {"enforce": "Always", "max": "At most"}


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the list shows it."""

    id: UUID
    pool_id: UUID
    pool_name: str
    name: str
    key_prefix: str
    status: str
    created_at: datetime
    last_used_at: datetime | None
    allowed_models: list[str] | None
    reasoning_effort: str | None
    reasoning_effort_mode: str | None
    requests_24h: int


def visible_keys(
    conn: Conn,
    pool_ids: frozenset[UUID] | None,
    pool_id: UUID | None = None,
    *,
    key_id: UUID | None = None,
    limit: int | None = None,
) -> list[KeyRow]:
    """The keys of every Pool (`pool_ids` None) or of `pool_ids`, only of `pool_id` when
    given (only the key `key_id` when given; at most `limit`); live keys first, then by Pool
    and newest first. Requests are counted from the request logs, which name a key by its
    display prefix (earlier ones after a rotation)."""
    scope = list(pool_ids) if pool_ids is not None else None
    cur = conn.cursor(row_factory=class_row(KeyRow))
    return cur.execute(
        "SELECT k.id, k.pool_id, p.name AS pool_name, k.name, k.key_prefix, k.status,"
        " k.created_at, k.last_used_at, k.allowed_models, k.reasoning_effort,"
        " k.reasoning_effort_mode,"
        " (SELECT count(*) FROM request_logs r WHERE r.pool_id = k.pool_id"
        "   AND r.created_at >= now() - interval '24 hours'"
        "   AND r.key_prefix = ANY(array_prepend(k.key_prefix, k.previous_prefixes)))"
        " AS requests_24h"
        " FROM pool_api_keys k JOIN pools p ON p.id = k.pool_id"
        " WHERE (%(scope)s::uuid[] IS NULL OR k.pool_id = ANY(%(scope)s::uuid[]))"
        " AND (%(pool)s::uuid IS NULL OR k.pool_id = %(pool)s::uuid)"
        " AND (%(key)s::uuid IS NULL OR k.id = %(key)s::uuid)"
        f" ORDER BY {STATUS_ORDER}, p.name, k.created_at DESC LIMIT %(limit)s",
        {"scope": scope, "pool": pool_id, "key": key_id, "limit": limit},
    ).fetchall()


def scoped_key(conn: Conn, pool_ids: frozenset[UUID] | None, key_id: UUID) -> ApiKey:
    """The key, if the operator may see its Pool; NotFound otherwise (as if absent)."""
    try:
        key = keys.get_key(conn, key_id)
    except NotFoundError:
        raise NotFoundError("no such key") from None
    if pool_ids is not None and key.pool_id not in pool_ids:
        raise NotFoundError("no such key")
    return key


def pool_name_of(conn: Conn, pool_id: UUID) -> str:
    row = conn.execute("SELECT name FROM pools WHERE id = %s", (pool_id,)).fetchone()
    if row is None:
        raise NotFoundError("no such Pool")
    name: str = row[0]
    return name


def parse_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def effort_choices() -> list[tuple[str, str]]:
    """The reasoning-policy select: (value for `parse_effort_policy`, label)."""
    choices = [("none", "Any (the client's own choice)")]
    for mode in EFFORT_MODES:
        choices += [(f"{mode}:{e}", f"{EFFORT_WORDS[mode]}: {e}") for e in REASONING_EFFORTS]
    return choices


def effort_value(mode: str | None, effort: str | None) -> str:
    return f"{mode}:{effort}" if mode and effort else "none"


def effort_text(mode: str | None, effort: str | None) -> str:
    return f"{EFFORT_WORDS.get(mode, mode)}: {effort}" if mode and effort else "Any"


def models_text(models: list[str] | None) -> str:
    return ", ".join(models) if models is not None else ""


@dataclass
class KeyForm:
    """The key form as typed (shown again when refused) and, once parsed, its values."""

    name: str = ""
    models: str = ""
    effort: str = "none"
    pool: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    allowed_models: list[str] | None = None
    effort_policy: EffortPolicy | None = None

    @classmethod
    def of_key(cls, key: ApiKey) -> KeyForm:
        return cls(
            key.name,
            models_text(key.allowed_models),
            effort_value(key.reasoning_effort_mode, key.reasoning_effort),
            str(key.pool_id),
        )

    def parse(self) -> bool:
        """Check every field with the store's rules (as `pooler admin key` does); False with
        `errors` by field when any is refused."""
        for name, check in (
            ("name", lambda: keys.check_key_name(self.name)),
            ("allowed_models", self._parse_models),
            ("reasoning_effort", self._parse_effort),
        ):
            try:
                check()
            except StoreError as exc:
                self.errors[name] = exc.message
        return not self.errors

    def _parse_models(self) -> None:
        self.allowed_models = keys.parse_allowed_models(self.models)

    def _parse_effort(self) -> None:
        self.effort_policy = keys.parse_effort_policy(self.effort)
