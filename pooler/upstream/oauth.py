"""OAuth token refresh against the auth server (control plane: httpx, sync, in a thread).

Protocol §6.3: refresh tokens are single-use and rotate. `refresh_token_expired`,
`refresh_token_reused`, `refresh_token_invalidated` and any 401 are permanent: the account
needs a new login, and they are never retried. Anything else is transient and the old token
stays in use. Of the transient failures, those a second try can cure (a network error, a 5xx,
a 429) are retried a few times with exponential backoff and jitter (tenacity), bounded by
`RetryPolicy`; a refusal in the 4xx range or a malformed answer is not.

A retry after a response lost in transit can find the refresh token already spent: the
server then says `refresh_token_reused`, which is permanent, as it is for the Codex CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import tenacity

CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
PERMANENT_CODES = frozenset(
    {"refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated"}
)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient refresh failures are retried. Waits grow from `initial_wait` by
    doubling up to `max_wait`, plus up to `jitter` random seconds; no new attempt starts
    once its wait would end more than `max_total` seconds after the first one began."""

    attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 4.0
    jitter: float = 0.5
    max_total: float = 8.0
    sleep: Callable[[float], None] = time.sleep


DEFAULT_RETRY: Final = RetryPolicy()


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    id_token: str | None


class RefreshFailed(Exception):
    """`code` is the OAuth error code, `http_<status>` or the network error's class name;
    `retryable` marks the transient failures another attempt may cure."""

    def __init__(self, code: str, *, permanent: bool, retryable: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.permanent = permanent
        self.retryable = retryable and not permanent


def error_code(body: Any) -> str | None:
    """An auth server error's code: `error.code`, `error` when a string, or `code`."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    if isinstance(error, str):
        return error
    code = body.get("code")
    return code if isinstance(code, str) else None


def refresh_tokens(
    client: httpx.Client,
    auth_base_url: str,
    refresh_token: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TokenSet:
    """Exchange the refresh token for a new token set, retrying transient failures.

    Raises:
        RefreshFailed: the last failure; `permanent` when the account needs a new login.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, retry.attempts))
        | tenacity.stop_before_delay(retry.max_total),
        wait=tenacity.wait_exponential(multiplier=retry.initial_wait, max=retry.max_wait)
        + tenacity.wait_random(0, retry.jitter),
        retry=tenacity.retry_if_exception(_retryable),
        sleep=retry.sleep,
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(_refresh_once, client, auth_base_url, refresh_token)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RefreshFailed) and exc.retryable


def _log_retry(state: tenacity.RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome is not None else None
    code = failure.code if isinstance(failure, RefreshFailed) else type(failure).__name__
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.info(
        "token refresh attempt %d failed (%s); retrying in %.2fs", state.attempt_number, code, wait
    )


def _refresh_once(client: httpx.Client, auth_base_url: str, refresh_token: str) -> TokenSet:
    try:
        response = client.post(
            f"{auth_base_url}/oauth/token",
            json={
                "client_id": CODEX_CLIENT_ID,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
            headers={"originator": "codex_pooler"},
        )
    except httpx.HTTPError as exc:
        raise RefreshFailed(type(exc).__name__, permanent=False, retryable=True) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if status != 200:
        code = error_code(body) or f"http_{status}"
        permanent = code in PERMANENT_CODES or status == 401
        raise RefreshFailed(code, permanent=permanent, retryable=status >= 500 or status == 429)
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise RefreshFailed("invalid_token_response", permanent=False)
    return TokenSet(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token")
        if isinstance(body.get("refresh_token"), str)
        else None,
        id_token=body.get("id_token") if isinstance(body.get("id_token"), str) else None,
    )
