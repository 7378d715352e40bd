"""How the audit log shows an event's details (pure, no I/O): every secret-looking value
masked (`masked`), the before/after of an edit as diff rows (`diff_rows`), the other
details as rows (`detail_rows`), the words naming a target (`target_label`), and each value
as readable text (`shown`).

Masking is defense in depth: writers never put a secret in `details`, but a value under a
key named like a password, secret, token, key hash, digest or ciphertext, or a string that
looks like a raw Pool key, MCP token or JWT, is shown as MASK whatever wrote it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
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
# Keys whose value names the target, in the order tried.
_NAMING_KEYS: Final = ("name", "label", "email", "prefix")
_MAX_DEPTH: Final = 32


@dataclass(frozen=True, slots=True)
class DiffRow:
    field: str
    before: str
    after: str


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


def shown(value: Any) -> str:
    """A value as an operator reads it: text as is ("(empty)" when empty), none as "—",
    on/off for booleans,
    lists joined with commas, other objects as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return value or "(empty)"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def diff_rows(details: Mapping[str, Any]) -> list[DiffRow]:
    """One row per field an edit changed (`before`/`after` in the details), masked."""
    safe = masked(details)
    before, after = safe.get("before"), safe.get("after")
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return []
    keys = list(dict.fromkeys([*before, *after]))
    return [DiffRow(k, shown(before.get(k)), shown(after.get(k))) for k in keys]


def detail_rows(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The details other than the diff, as (key, text) rows, masked."""
    safe = masked(details)
    has_diff = bool(diff_rows(details))
    return [
        (str(k), shown(v)) for k, v in safe.items() if not (has_diff and k in ("before", "after"))
    ]


def target_label(details: Mapping[str, Any]) -> str | None:
    """The name the details give the target (a Pool's or key's name, an account's label,
    an operator's email, a key's prefix), masked; None when they give none."""
    safe = masked(details)
    for key in _NAMING_KEYS:
        value = safe.get(key)
        if isinstance(value, str) and value:
            return value
    return None
