"""Read identity claims from Codex id/access tokens (JWTs). Pure; no signature check:
the tokens come from an operator's own auth.json or the OAuth server, and the upstream
validates them on every call. Claims live in the `https://api.openai.com/auth` namespace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pooler.protocol.jwt import decode_jwt_claims

AUTH_NAMESPACE = "https://api.openai.com/auth"
PROFILE_NAMESPACE = "https://api.openai.com/profile"
_PLAN_ALIASES = {"hc": "enterprise", "education": "edu"}  # as the Codex CLI reads them


class ClaimsError(ValueError):
    """Not a JWT whose payload is a JSON object (the message never quotes the token)."""


@dataclass(frozen=True, slots=True)
class Identity:
    email: str | None
    chatgpt_account_id: str | None
    chatgpt_user_id: str | None
    plan_type: str | None
    access_token_expires_at: datetime | None


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWT (header.payload.signature) as a dict."""
    try:
        return decode_jwt_claims(token)
    except ValueError as exc:
        raise ClaimsError(f"token is not a readable JWT: {exc}") from None


def expires_at(claims: dict[str, Any]) -> datetime | None:
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return datetime.fromtimestamp(exp, UTC)
    return None


def identity_from_tokens(id_token: str | None, access_token: str) -> Identity:
    """Identity from the id token (preferred) and the access token (fallback, expiry)."""
    access = decode_claims(access_token)
    ident = decode_claims(id_token) if id_token else {}
    auth = _merged(_namespace(ident, AUTH_NAMESPACE), _namespace(access, AUTH_NAMESPACE))
    profile = _merged(_namespace(ident, PROFILE_NAMESPACE), _namespace(access, PROFILE_NAMESPACE))
    plan = _text(auth.get("chatgpt_plan_type"))
    return Identity(
        email=_text(ident.get("email")) or _text(profile.get("email")),
        chatgpt_account_id=_text(auth.get("chatgpt_account_id")),
        chatgpt_user_id=_text(auth.get("chatgpt_user_id")) or _text(auth.get("user_id")),
        plan_type=_PLAN_ALIASES.get(plan.lower(), plan.lower()) if plan else None,
        access_token_expires_at=expires_at(access),
    )


def _namespace(claims: dict[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(name)
    return value if isinstance(value, dict) else {}


def _merged(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    merged = dict(second)
    merged.update({k: v for k, v in first.items() if v not in (None, "")})
    return merged


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
