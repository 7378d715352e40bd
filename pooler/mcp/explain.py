"""One request's whole story in plain words (`explain`), for the `explain_request` tool.
Pure: built from what `get_request_log` returns (the row, its attempts in order, the
routing explanation and the exclusions), with the same facts beside the words.

    Request req_x (/v1/chat/completions, model gpt-5.5, key sk-cxp-ab12, Pool demo) at
    2026-12-06 12:03:04 UTC: account-1 was tried first (least_used) and answered 500
    server_error after 80 ms; the gateway failed over to account-2, which answered 200
    (first byte after 600 ms). The conversation moved from account-1 to account-2 because
    account-1 failed with server_error. 1,234 input tokens (80 % cached), 56 output. The
    whole request took 1.3 s.

Only what the log holds is told: codes, labels, times, counts; never content.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from pooler.mcp.log_models import Attempt, RequestLogFull

# What a route class is, for a reader (the log keeps the class, not the path).
ROUTE_WORDS: Final = {
    "responses": "/backend-api/codex/responses",
    "compact": "/backend-api/codex/responses/compact",
    "files": "/backend-api/files",
    "transcribe": "/backend-api/transcribe",
    "realtime_calls": "/backend-api/codex/realtime/calls",
    "models": "the models list",
    "v1_responses": "/v1/responses",
    "v1_chat": "/v1/chat/completions",
    "v1_images": "/v1/images",
    "v1_transcriptions": "/v1/audio/transcriptions",
    "v1_files": "/v1/files",
    "v1_usage": "/v1/usage",
}
# Why an account was left out or lost a conversation, by the router's codes.
REASON_WORDS: Final = {
    "not_active": "was not active (paused, disabled or needing a new sign-in)",
    "actor_down": "was not running",
    "usage_limit_reached": "had reached its usage limit",
    "quota_exhausted": "was out of quota",
    "quota_weekly_exhausted": "was out of its weekly quota",
    "quota_model_exhausted": "was out of quota for this model",
    "rate_limited": "was rate-limited by the upstream",
    "at_capacity": "was at its concurrency cap",
    "circuit_open": "had its circuit open after repeated failures",
    "circuit_probe_in_flight": "was already being probed after failures",
    "already_tried": "had already been tried for this request",
    "model_not_supported": "does not serve this model",
    "not_in_pool": "is no longer in this Pool",
    "refused": "refused the lease",
    "failed": "failed",
}
OUTCOME_WORDS: Final = {
    "stream_failed": "the stream broke after it had started, so the client saw the failure "
    "(output already sent is never replayed on another account)",
    "client_disconnected": "the client disconnected before the answer was complete",
    "upstream_client_error": "the upstream refused the request itself, a fault in the "
    "request, so no other account was tried",
}


class Tokens(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: int | None
    cached_input: int | None
    cached_percent: int | None
    output: int | None
    reasoning: int | None


class Explanation(BaseModel):
    """explain_request's answer: the story, and the facts it tells."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    story: str = Field(description="The whole story in plain words")
    created_at: datetime
    route: str
    model: str | None
    pool: str | None
    key_prefix: str | None
    status_code: int | None
    outcome: str
    error_code: str | None
    strategy: str | None
    refused_before_any_account: bool = Field(description="No upstream account was tried")
    attempts: list[Attempt]
    failed_over: bool = Field(description="More than one account was tried")
    served_by: str | None = Field(description="The account that answered, if one did")
    continuity: str | None
    continuity_from: str | None
    continuity_reason: str | None
    left_out: dict[str, str] = Field(description="Accounts left out, with why (codes)")
    tokens: Tokens | None


def explain(full: RequestLogFull) -> Explanation:
    row, attempts, routing = full.request, full.attempts, full.routing
    strategy = routing.strategy if routing else None
    served = _served(full)
    left_out = {e.account: ", ".join(e.codes) for e in full.exclusions}
    if routing is not None and not attempts:
        for c in routing.candidates:
            if c.verdict != "chosen" and not c.verdict.startswith("skipped"):
                left_out.setdefault(c.account, c.verdict)
    continuity = row.continuity if row.continuity not in (None, "none") else None
    reason = routing.continuity_reason if routing else None
    tokens = _tokens(full)
    parts = [_head(full), _attempts_told(full, strategy, served, left_out)]
    outcome = OUTCOME_WORDS.get(row.outcome)
    if outcome is not None and attempts:
        parts.append(f"Then {outcome}.")
    parts.append(_continuity_told(full, served, reason))
    if tokens is not None:
        parts.append(_tokens_told(tokens))
    if row.duration_ms is not None:
        parts.append(f"The whole request took {duration(row.duration_ms)}.")
    return Explanation(
        request_id=row.request_id,
        story=" ".join(p for p in parts if p),
        created_at=row.created_at,
        route=row.route,
        model=row.model,
        pool=row.pool,
        key_prefix=row.key_prefix,
        status_code=row.status_code,
        outcome=row.outcome,
        error_code=row.error_code,
        strategy=strategy,
        refused_before_any_account=not attempts,
        attempts=attempts,
        failed_over=len({a.account_label for a in attempts}) > 1,
        served_by=served,
        continuity=continuity,
        continuity_from=row.continuity_from_label if continuity == "moved" else None,
        continuity_reason=reason if continuity == "moved" else None,
        left_out=left_out,
        tokens=tokens,
    )


def duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def answer(status: int | None, code: str | None) -> str:
    return " ".join(str(p) for p in (status, code) if p is not None) or "nothing"


def _served(full: RequestLogFull) -> str | None:
    """The account whose answer the client got (a 1xx-3xx from the last attempt)."""
    if full.request.account_label and full.attempts:
        last = full.attempts[-1]
        if last.account_label == full.request.account_label and (last.status_code or 999) < 400:
            return last.account_label
    return None


def _head(full: RequestLogFull) -> str:
    row = full.request
    what = [ROUTE_WORDS.get(row.route, f"route {row.route}")]
    if row.transport == "websocket":
        what[0] = f"websocket turn on {what[0]}"
    what.extend(
        f"{name} {value}"
        for name, value in (("model", row.model), ("key", row.key_prefix), ("Pool", row.pool))
        if value
    )
    at = row.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"Request {row.request_id} ({', '.join(what)}) at {at}:"


def _result(a: Attempt, served: bool) -> str:
    took = duration(a.duration_ms) if a.duration_ms is not None else None
    if served:  # its duration runs past the request's own end (the upstream's close)
        first = f" (first byte after {duration(a.ttfb_ms)})" if a.ttfb_ms is not None else ""
        return f"answered {answer(a.status_code, None)}{first}"
    said = f"answered {answer(a.status_code, a.error_code)}" if a.status_code else "failed"
    if not a.status_code and a.error_code:
        said += f" ({a.error_code})"
    return said + (f" after {took}" if took else "")


def _attempts_told(
    full: RequestLogFull, strategy: str | None, served: str | None, left_out: dict[str, str]
) -> str:
    row, attempts = full.request, full.attempts
    how = f" ({strategy})" if strategy else ""
    if not attempts:
        got = f"the client got {answer(row.status_code, row.error_code)}"
        if full.routing is None or not left_out:
            return f"it was refused before any account was asked for: {got}."
        why = "; ".join(f"{label} {_reason(code)}" for label, code in left_out.items())
        return f"no account could take it{how}, so {got}. Left out: {why}."
    told: list[str] = []
    seen: set[str | None] = set()
    for index, a in enumerate(attempts):
        is_served = served is not None and index == len(attempts) - 1
        label = a.account_label or "an account"
        if index == 0:
            first = "was tried first" if len(attempts) > 1 else "was chosen"
            told.append(f"{label} {first}{how} and {_result(a, is_served)}")
        elif a.account_label in seen:
            told.append(f"{label} was tried again and {_result(a, is_served)}")
        else:
            told.append(f"the gateway failed over to {label}, which {_result(a, is_served)}")
        seen.add(a.account_label)
    said = "; ".join(told)
    if served is None:
        said += f"; the client got {answer(row.status_code, row.error_code)}"
    return said + "."


def _reason(code: str) -> str:
    return REASON_WORDS.get(code, f"failed with {code}")


def _continuity_told(full: RequestLogFull, served: str | None, reason: str | None) -> str:
    row = full.request
    on = served or row.account_label
    if row.continuity == "new":
        where = f" to {on}" if on else ""
        return f"It began a new conversation, now pinned{where} to keep its prompt cache."
    if row.continuity == "kept":
        return f"The conversation stayed on {on}, the account holding its prompt cache."
    if row.continuity == "moved":
        left = row.continuity_from_label or "its account"
        to = f" to {on}" if on else ""
        why = f" because {left} {_reason(reason)}" if reason else ""
        return f"The conversation moved from {left}{to}{why}."
    if row.continuity == "disabled":
        return "Continuity is off for this Pool, so the conversation was not pinned."
    return ""


def _tokens(full: RequestLogFull) -> Tokens | None:
    row = full.request
    if row.input_tokens is None and row.output_tokens is None:
        return None
    percent = None
    if row.input_tokens and row.cached_input_tokens is not None:
        percent = round(100 * row.cached_input_tokens / row.input_tokens)
    return Tokens(
        input=row.input_tokens,
        cached_input=row.cached_input_tokens,
        cached_percent=percent,
        output=row.output_tokens,
        reasoning=row.reasoning_tokens,
    )


def _tokens_told(tokens: Tokens) -> str:
    said = []
    if tokens.input is not None:
        cached = f" ({tokens.cached_percent} % cached)" if tokens.cached_percent else ""
        said.append(f"{tokens.input:,} input tokens{cached}")
    if tokens.output is not None:
        reasoning = f" ({tokens.reasoning:,} reasoning)" if tokens.reasoning else ""
        said.append(f"{tokens.output:,} output{reasoning}")
    return ", ".join(said) + "."
