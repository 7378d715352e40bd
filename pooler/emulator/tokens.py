"""Minting the fake account's tokens: unsigned JWTs with the real claim shapes (§6.2)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from pooler.protocol.jwt import AUTH_CLAIMS, PROFILE_CLAIMS, b64url_encode

ISSUER = "https://auth.openai.com"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
_HEADER = b64url_encode(b'{"alg":"none","typ":"JWT"}')


@dataclass(frozen=True)
class Identity:
    """What the tokens of one account say about it."""

    account_id: str
    user_id: str
    email: str
    plan_type: str


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    id_token: str
    refresh_token: str
    issued_at: float
    expires_at: float


def mint_unsigned_jwt(claims: dict[str, Any]) -> str:
    """`header.payload.sig` with header `{"alg":"none","typ":"JWT"}` and a dummy signature."""
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return f"{_HEADER}.{b64url_encode(payload)}.{b64url_encode(secrets.token_bytes(8))}"


def _namespace(who: Identity) -> dict[str, Any]:
    return {
        "chatgpt_account_id": who.account_id,
        "chatgpt_plan_type": who.plan_type,
        "chatgpt_user_id": who.user_id,
        "user_id": who.user_id,
    }


def access_token_claims(who: Identity, now: float, ttl: float) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": ["https://api.openai.com/v1"],
        "sub": f"auth0|{who.user_id}",
        "email": who.email,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl),
        "jti": secrets.token_hex(16),
        "scp": ["openid", "profile", "email", "offline_access"],
        AUTH_CLAIMS: _namespace(who),
        PROFILE_CLAIMS: {"email": who.email, "email_verified": True},
    }


def id_token_claims(who: Identity, now: float) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": [CODEX_CLIENT_ID],
        "sub": f"auth0|{who.user_id}",
        "email": who.email,
        "email_verified": True,
        "iat": int(now),
        "exp": int(now + 3600),
        "jti": secrets.token_hex(16),
        AUTH_CLAIMS: _namespace(who),
    }


def mint_token_set(who: Identity, now: float, ttl: float) -> TokenSet:
    """A fresh access token, id token and opaque refresh token for one account."""
    claims = access_token_claims(who, now, ttl)
    return TokenSet(
        access_token=mint_unsigned_jwt(claims),
        id_token=mint_unsigned_jwt(id_token_claims(who, now)),
        refresh_token="rt_" + secrets.token_urlsafe(32),
        issued_at=now,
        expires_at=float(claims["exp"]),
    )
