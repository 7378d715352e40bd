"""The routing story of one request (`request_logs.routing`): how its account was chosen,
as the request-log detail page tells it.

    {"strategy": "least_used",
     "candidates": [{"label": "a", "verdict": "upstream_server_error"},  # tried, failed
                    {"label": "b", "verdict": "chosen"},                 # served it
                    {"label": "c", "verdict": "skipped: ranked below the chosen account"},
                    {"label": "d", "verdict": "quota_exhausted"}],       # left out, and why
     "more": 12,                  # only when more than MAX_CANDIDATES: the ones not listed
     "continuity": "moved", "continuity_reason": "not_active"}  # the reason only when moved

Accounts are listed in the order they mattered: those tried (in attempt order), then the
other candidates the router offered, then those it left out. Built once per request, when
its attempts are over, from what leasing already computed (its choices, exclusions and
attempts): a few dict operations, nothing per event. Labels and codes only, never a secret
(an operator names the labels; codes are the gateway's or a bounded upstream code, escaped
when stored). Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from pooler.routing.choose import PIN_MOVED

if TYPE_CHECKING:
    from pooler.web.leasing import LeaseAttempts
    from pooler.web.request_record import AttemptRecord

MAX_CANDIDATES: Final = 50
CHOSEN: Final = "chosen"
SKIPPED: Final = "skipped: ranked below the chosen account"
FAILED: Final = "failed"


def routing_story(
    attempts: LeaseAttempts,
    tried: list[AttemptRecord],
    serving: AttemptRecord | None,
    continuity: str | None,
    continuity_reason: str | None,
) -> dict[str, Any] | None:
    """The story of a request whose account was asked for (None: it never was). `tried`:
    its attempts in order; `serving`: the attempt that took the request (None when every
    account failed or none was eligible)."""
    choices = attempts.choices
    if not choices:
        return None
    verdicts: dict[str, str] = {}
    for row in tried:  # a later attempt on the same account (after a refresh) has the say
        verdicts[row.account_label] = CHOSEN if row is serving else row.error_code or FAILED
    setdefault = verdicts.setdefault
    for choice in choices:
        for snapshot in choice.candidates:
            setdefault(snapshot.label, SKIPPED)
    for label, code in attempts.exclusions.items():
        setdefault(label, code)
    listed = list(verdicts.items())
    story: dict[str, Any] = {
        "strategy": choices[0].strategy,
        "candidates": [
            {"label": label, "verdict": verdict} for label, verdict in listed[:MAX_CANDIDATES]
        ],
    }
    if len(listed) > MAX_CANDIDATES:
        story["more"] = len(listed) - MAX_CANDIDATES
    if continuity is not None:
        story["continuity"] = continuity
        if continuity == PIN_MOVED and continuity_reason is not None:
            story["continuity_reason"] = continuity_reason
    return story


def failure_on(tried: list[AttemptRecord], account_id: str | None) -> str | None:
    """Why the account failed this request (its first failed attempt's code), if it did."""
    for row in tried:
        if row.account_id == account_id and row.error_code:
            return row.error_code
    return None
