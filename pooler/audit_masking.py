"""Secrets hidden from what an audit event shows (pure, no I/O), for the console's audit
log and the MCP audit tools alike.

Masking is defense in depth: writers never put a secret in `details`, but a value under a
key named like a password, secret, token, key hash, digest or ciphertext, or a string that
looks like a raw Pool key, MCP token or JWT, is shown as MASK whatever wrote it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

MASK: Final = "•••••• (hidden)"
SECRET_KEY_RE: Final = re.compile(
    r"pass(word|wd|phrase)?|secret|token|key_?hash|digest|ciphertext|cookie|authorization"
    r"|credential|private_?key|nonce|api_?key$",
    re.IGNORECASE,
)
# A raw Pool key or MCP token (its display prefix alone is 12 characters) or a JWT.
SECRET_VALUE_RE: Final = re.compile(
    r"(sk-cxp-|cxp-mcp-)[A-Za-z0-9_-]{12,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}"
)
_MAX_DEPTH: Final = 32


def is_secret_key(key: str) -> bool:
    return SECRET_KEY_RE.search(key) is not None


def masked(value: Any, depth: int = 0) -> Any:
    """`value` with every secret-looking entry replaced by MASK, at any depth."""
    if isinstance(value, str):
        return MASK if SECRET_VALUE_RE.search(value) else value
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {
            str(k): MASK if is_secret_key(str(k)) else masked(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(v, depth + 1) for v in value]
    return value
