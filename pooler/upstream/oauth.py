"""OAuth token refresh against the auth server (control plane: httpx, sync, in a thread).

Protocol §6.3: refresh tokens are single-use and rotate. `refresh_token_expired`,
`refresh_token_reused`, `refresh_token_invalidated` and any 401 are permanent: the account
needs a new login. Anything else is transient and the old token stays in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
PERMANENT_CODES = frozenset(
    {"refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated"}
)


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    id_token: str | None


class RefreshFailed(Exception):
    def __init__(self, code: str, *, permanent: bool) -> None:
        super().__init__(code)
        self.code = code
        self.permanent = permanent


def _error_code(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    if isinstance(error, str):
        return error
    code = body.get("code")
    return code if isinstance(code, str) else None


def refresh_tokens(client: httpx.Client, auth_base_url: str, refresh_token: str) -> TokenSet:
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
        raise RefreshFailed(type(exc).__name__, permanent=False) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        code = _error_code(body) or f"http_{response.status_code}"
        permanent = code in PERMANENT_CODES or response.status_code == 401
        raise RefreshFailed(code, permanent=permanent)
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise RefreshFailed("invalid_token_response", permanent=False)
    return TokenSet(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token")
        if isinstance(body.get("refresh_token"), str)
        else None,
        id_token=body.get("id_token") if isinstance(body.get("id_token"), str) else None,
    )
