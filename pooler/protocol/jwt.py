"""Reading JWT claims without verifying signatures.

ChatGPT access and id tokens are JWTs whose payload carries the account id, plan and
expiry (protocol §6.2). Neither the Codex CLI nor the gateway verifies their signatures:
they only base64url-decode the payload. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

AUTH_CLAIMS = "https://api.openai.com/auth"
PROFILE_CLAIMS = "https://api.openai.com/profile"

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(segment: str) -> bytes:
    """Decode one unpadded base64url segment; ValueError on foreign characters."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not a base64url segment")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError("not a base64url segment") from exc


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The payload of `header.payload.signature` as a dict.

    Raises:
        ValueError: the token is not three dot-separated base64url segments, or its
            payload is not a JSON object.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        raise ValueError("a JWT has three dot-separated segments")
    raw = b64url_decode(parts[1])
    try:
        claims = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("the JWT payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise ValueError("the JWT payload is not a JSON object")
    return claims


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim as epoch seconds; None when absent or the token is not a JWT."""
    try:
        claims = decode_jwt_claims(token)
    except ValueError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def auth_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The `https://api.openai.com/auth` namespace object (empty when missing)."""
    value = claims.get(AUTH_CLAIMS)
    return value if isinstance(value, dict) else {}
