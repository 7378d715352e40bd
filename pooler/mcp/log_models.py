"""What the MCP request-log tools return (output models), and the pure conversion of the
store's rows (`pooler.store.request_log_query`: `fetch_page`'s rows, `fetch_detail`'s row
and attempts) into them.

Metadata only, as the console shows it: the fields are those of `request_log_query.FIELDS`
(a test keeps them in step), never a body, a token or a raw key. The routing explanation is
the `routing` jsonb the gateway wrote (`pooler.web.routing_story`), read defensively: an
unexpected shape shows as less, never as an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestLogItem(_Out):
    """One request, as a list shows it."""

    id: UUID = Field(description="The row's id (get_request_log takes it, or request_id)")
    request_id: str = Field(description="The x-request-id the client received")
    created_at: datetime
    pool_id: UUID | None
    pool: str | None = Field(description="The Pool's name")
    key_prefix: str | None = Field(description="The Pool key's display prefix (never the key)")
    route: str = Field(description="The route class, e.g. responses, v1_chat")
    transport: str | None
    model: str | None
    stream: bool
    status_code: int | None
    outcome: str
    error_code: str | None
    account_id: UUID | None
    account_label: str | None
    retries: int
    continuity: str | None = Field(description="none, new, kept, moved or disabled")
    duration_ms: float | None
    ttfb_ms: float | None
    input_tokens: int | None
    cached_input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    total_tokens: int | None


class RequestLogDetail(RequestLogItem):
    """One request with the client facts the detail page shows."""

    request_bytes: int | None
    response_bytes: int | None
    client_request_id: str | None
    client_ip: str | None
    client_user_agent: str | None
    continuity_from: UUID | None = Field(description="The account the conversation left")
    continuity_from_label: str | None
    cost_usd: Decimal | None = Field(
        None, description="What the tokens would cost at API list prices, USD (none: unpriced)"
    )


class Attempt(_Out):
    attempt: int
    account_id: UUID | None
    account_label: str | None
    started_at: datetime
    status_code: int | None
    outcome: str
    error_code: str | None
    ttfb_ms: float | None
    duration_ms: float | None


class Candidate(_Out):
    account: str
    verdict: str = Field(
        description="chosen, the failure code of an account tried, 'skipped: ...' for one "
        "ranked below the chosen, or the exclusion code of one left out"
    )


class Routing(_Out):
    strategy: str | None
    candidates: list[Candidate]
    more_candidates: int = Field(description="Candidates not listed")
    continuity: str | None
    continuity_reason: str | None = Field(description="Why the conversation moved")


class Exclusion(_Out):
    account: str
    codes: list[str]


class RequestLogFull(_Out):
    """get_request_log's answer."""

    request: RequestLogDetail
    attempts: list[Attempt]
    routing: Routing | None = Field(description="None: no account was asked for")
    exclusions: list[Exclusion]


def item_from_row(row: Mapping[str, Any], pool: str | None) -> RequestLogItem:
    return RequestLogItem.model_validate(_fields(row, RequestLogItem, pool))


def full_from_rows(
    row: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]], pool: str | None
) -> RequestLogFull:
    """`fetch_detail`'s row (DETAIL_COLUMNS and `continuity_from_label`) and attempts."""
    return RequestLogFull(
        request=RequestLogDetail.model_validate(_fields(row, RequestLogDetail, pool)),
        attempts=[Attempt.model_validate(_fields(a, Attempt, None)) for a in attempts],
        routing=routing_from(row.get("routing")),
        exclusions=exclusions_from(row.get("exclusions")),
    )


def _fields(row: Mapping[str, Any], model: type[BaseModel], pool: str | None) -> dict[str, Any]:
    found = {name: row.get(name) for name in model.model_fields if name != "pool"}
    if "pool" in model.model_fields:
        found["pool"] = pool
    return found


def routing_from(routing: Any) -> Routing | None:
    if not isinstance(routing, Mapping):
        return None
    candidates = [
        Candidate(account=str(item.get("label")), verdict=str(item.get("verdict")))
        for item in routing.get("candidates") or ()
        if isinstance(item, Mapping)
    ]
    more = routing.get("more")
    return Routing(
        strategy=_text(routing.get("strategy")),
        candidates=candidates,
        more_candidates=more if isinstance(more, int) and not isinstance(more, bool) else 0,
        continuity=_text(routing.get("continuity")),
        continuity_reason=_text(routing.get("continuity_reason")),
    )


def exclusions_from(exclusions: Any) -> list[Exclusion]:
    """The stored exclusions (account label -> code, or codes), by label."""
    if not isinstance(exclusions, Mapping):
        return []
    return [
        Exclusion(
            account=str(label),
            codes=[str(c) for c in code] if isinstance(code, list) else [str(code)],
        )
        for label, code in sorted(exclusions.items(), key=lambda item: str(item[0]))
    ]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
