"""explain_request's story (pooler.mcp.explain), told from crafted rows as
`request_log_query.fetch_detail` returns them: refused before any account, nobody eligible,
a failover, continuity new/kept/moved/disabled, a broken stream, a client gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jsonschema

from pooler.mcp.explain import Explanation, explain
from pooler.mcp.log_models import RequestLogDetail, RequestLogFull, full_from_rows
from pooler.store import request_log_query as q

AT = datetime(2026, 12, 6, 12, 3, 4, tzinfo=UTC)
A1, A2 = uuid4(), uuid4()


def row(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(q.DETAIL_COLUMNS)
    base.update(
        id=uuid4(),
        request_id="req_x",
        created_at=AT,
        pool_id=uuid4(),
        key_prefix="sk-cxp-ab12",
        route="v1_chat",
        transport="http_json",
        model="gpt-5.5",
        stream=False,
        status_code=200,
        outcome="completed",
        retries=0,
        continuity="none",
        continuity_from_label=None,
    )
    base.update(given)
    return base


def attempt(n: int, label: str, status: int | None, code: str | None, ms: float) -> dict[str, Any]:
    return {
        "attempt": n,
        "account_id": A1 if label == "account-1" else A2,
        "account_label": label,
        "started_at": AT + timedelta(milliseconds=n),
        "status_code": status,
        "outcome": "completed" if code is None else "failed",
        "error_code": code,
        "ttfb_ms": ms / 2,
        "duration_ms": ms,
    }


def told(detail: dict[str, Any], attempts: list[dict[str, Any]]) -> Explanation:
    out = explain(full_from_rows(detail, attempts, "demo"))
    jsonschema.validate(
        out.model_dump(mode="json"), Explanation.model_json_schema(mode="serialization")
    )
    return out


def test_the_fields_are_the_consoles() -> None:
    names = {name for name, _ in q.FIELDS}
    assert names <= set(RequestLogDetail.model_fields)
    assert set(q.DETAIL_COLUMNS) - {"exclusions", "routing"} <= set(RequestLogDetail.model_fields)


def test_failover_and_a_moved_conversation() -> None:
    detail = row(
        account_id=A2,
        account_label="account-2",
        retries=1,
        continuity="moved",
        continuity_from=A1,
        continuity_from_label="account-1",
        duration_ms=1300.0,
        input_tokens=1234,
        cached_input_tokens=987,
        output_tokens=56,
        exclusions={"account-1": "server_error"},
        routing={
            "strategy": "least_used",
            "candidates": [
                {"label": "account-1", "verdict": "server_error"},
                {"label": "account-2", "verdict": "chosen"},
            ],
            "continuity": "moved",
            "continuity_reason": "server_error",
        },
    )
    out = told(
        detail,
        [
            attempt(1, "account-1", 500, "server_error", 80),
            attempt(2, "account-2", 200, None, 1200),
        ],
    )
    assert out.story == (
        "Request req_x (/v1/chat/completions, model gpt-5.5, key sk-cxp-ab12, Pool demo) at"
        " 2026-12-06 12:03:04 UTC: account-1 was tried first (least_used) and answered 500"
        " server_error after 80 ms; the gateway failed over to account-2, which answered 200"
        " (first byte after 600 ms). The conversation moved from account-1 to account-2"
        " because account-1 failed with server_error. 1,234 input tokens (80 % cached), 56 output."
        " The whole request took 1.3 s."
    )
    assert out.failed_over and out.served_by == "account-2"
    assert not out.refused_before_any_account
    assert (out.continuity, out.continuity_from, out.continuity_reason) == (
        "moved",
        "account-1",
        "server_error",
    )
    assert out.tokens is not None and out.tokens.cached_percent == 80
    assert [a.account_label for a in out.attempts] == ["account-1", "account-2"]


def test_refused_before_any_account() -> None:
    detail = row(status_code=400, outcome="rejected", error_code="invalid_request_error")
    out = told(detail, [])
    assert "it was refused before any account was asked for: the client got 400" in out.story
    assert "invalid_request_error" in out.story
    assert out.refused_before_any_account and out.served_by is None and out.tokens is None
    assert out.strategy is None and out.left_out == {}


def test_no_account_could_take_it_says_why_each_was_left_out() -> None:
    detail = row(
        status_code=503,
        outcome="rejected",
        error_code="no_eligible_backend",
        exclusions={"account-1": "quota_exhausted", "account-2": "not_active"},
        routing={
            "strategy": "round_robin",
            "candidates": [
                {"label": "account-1", "verdict": "quota_exhausted"},
                {"label": "account-2", "verdict": "not_active"},
            ],
        },
    )
    out = told(detail, [])
    assert "no account could take it (round_robin), so the client got 503" in out.story
    assert "account-1 was out of quota" in out.story
    assert "account-2 was not active" in out.story
    assert out.left_out == {"account-1": "quota_exhausted", "account-2": "not_active"}


def test_continuity_new_kept_and_disabled() -> None:
    served = {"account_id": A1, "account_label": "account-1"}
    one = [attempt(1, "account-1", 200, None, 40)]
    new = told(row(continuity="new", **served), one)
    assert "was chosen and answered 200 (first byte after 20 ms)" in new.story
    assert "began a new conversation, now pinned to account-1" in new.story
    kept = told(row(continuity="kept", **served), one)
    assert "The conversation stayed on account-1" in kept.story
    assert kept.continuity == "kept" and kept.continuity_from is None
    off = told(row(continuity="disabled", **served), one)
    assert "Continuity is off for this Pool" in off.story
    plain = told(row(continuity="none", **served), one)
    assert "conversation" not in plain.story and plain.continuity is None


def test_a_stream_that_broke_after_it_started() -> None:
    detail = row(
        account_id=A1,
        account_label="account-1",
        stream=True,
        transport="http_sse",
        route="responses",
        outcome="stream_failed",
        error_code="upstream_disconnected",
    )
    out = told(detail, [attempt(1, "account-1", 200, None, 500)])
    assert "/backend-api/codex/responses" in out.story
    assert "the stream broke after it had started" in out.story
    assert "never replayed on another account" in out.story
    assert out.outcome == "stream_failed" and out.served_by == "account-1"


def test_a_client_that_went_away() -> None:
    detail = row(
        account_id=A1, account_label="account-1", status_code=499, outcome="client_disconnected"
    )
    out = told(detail, [attempt(1, "account-1", 200, None, 300)])
    assert "the client disconnected before the answer was complete" in out.story


def test_every_account_failed() -> None:
    detail = row(
        status_code=502,
        outcome="failed",
        error_code="upstream_unavailable",
        retries=1,
        routing={"strategy": "fill_first", "candidates": []},
    )
    out = told(
        detail,
        [
            attempt(1, "account-1", 500, "server_error", 10),
            attempt(2, "account-2", None, "connect_error", 5),
        ],
    )
    assert "account-2, which failed (connect_error) after 5 ms" in out.story
    assert "the client got 502 upstream_unavailable" in out.story
    assert out.served_by is None and out.failed_over


def test_a_websocket_turn_and_an_unknown_route() -> None:
    ws = told(row(transport="websocket", route="responses"), [])
    assert "websocket turn on /backend-api/codex/responses" in ws.story
    odd = told(row(route="later_route"), [])
    assert "route later_route" in odd.story


def test_a_damaged_routing_blob_shows_as_less() -> None:
    full = full_from_rows(
        row(routing={"candidates": ["x", {"label": 1, "verdict": None}], "more": "many"}),
        [],
        None,
    )
    assert isinstance(full, RequestLogFull) and full.routing is not None
    assert [(c.account, c.verdict) for c in full.routing.candidates] == [("1", "None")]
    assert full.routing.more_candidates == 0
    assert full_from_rows(row(routing=[1, 2], exclusions="x"), [], None).routing is None
    assert UUID(str(full.request.id))
