"""How the audit log shows an event's details (pure, no I/O): every secret-looking value
masked (`masked`), the before/after of an edit as diff rows (`diff_rows`), the other
details as rows (`detail_rows`), the words naming a target (`target_label`), and each value
as readable text (`shown`).

Masking (`masked`) lives in `pooler.audit_masking`, shared with the MCP audit tools."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pooler.audit_masking import MASK, masked

# MASK and masked stay importable from here (the console's templates and tests use them).
__all__ = ["MASK", "DiffRow", "detail_rows", "diff_rows", "masked", "shown", "target_label"]

# Keys whose value names the target, in the order tried.
_NAMING_KEYS: Final = ("name", "label", "email", "prefix")


@dataclass(frozen=True, slots=True)
class DiffRow:
    field: str
    before: str
    after: str


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
