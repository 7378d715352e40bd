"""Text on its way into a row: the one place that decides what PostgreSQL and a terminal
can safely be given.

PostgreSQL refuses NUL in `text` and `jsonb` (and `NaN` in `jsonb`), psycopg cannot encode a
lone surrogate, and a terminal obeys the ANSI escapes an operator's `list` would print. So:

- traffic metadata (model names, user agents, upstream error codes and limit names, file
  names, audit details) is never refused, it is made storable: `storable` escapes every
  unprintable character (`\\x00`, `\\x1b`, `\\u202e`, ...) and bounds the length;
  `storable_json` does the same to every string of a JSON value;
- names an operator chooses (Pool, key, account label, email) are refused instead
  (`unprintable` says whether to; `pooler.store.common.check_printable` raises);
- a lookup by a name that cannot be stored cannot match: `findable` says so, so a lookup
  answers "not found" instead of failing in the driver.

Pure functions, no I/O; the fast path (printable and short: nearly every call) is one C call.
"""

from __future__ import annotations

import math
from typing import Any, Final

DEFAULT_LIMIT: Final = 200
# Joiners are "format" characters but belong to emoji sequences and some scripts.
_ALLOWED: Final = frozenset("\u200c\u200d")
_MAX_JSON_DEPTH: Final = 32


def _printable(ch: str) -> bool:
    return ch.isprintable() or ch in _ALLOWED


def unprintable(text: str) -> bool:
    """Whether `text` holds a control, format, separator, surrogate or unassigned
    character (anything `str.isprintable` refuses except the joiners); space is fine."""
    return not text.isprintable() and not all(_printable(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def storable(text: str | None, limit: int = DEFAULT_LIMIT) -> str | None:
    """`text` with every unprintable character escaped, cut to at most `limit` characters
    (None stays None). Printable, short text is returned as it is."""
    if text is None:
        return None
    if len(text) <= limit and text.isprintable():
        return text
    if unprintable(text):
        text = "".join(ch if _printable(ch) else _escape(ch) for ch in text[: limit + 1])
    return text[:limit]


def storable_json(value: Any, limit: int = DEFAULT_LIMIT, *, depth: int = 0) -> Any:
    """A JSON-shaped value whose every key and string is `storable`, whose non-finite
    floats are None, and that nests at most 32 deep (deeper values become None)."""
    if isinstance(value, str):
        return storable(value, limit)
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_JSON_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            storable(str(k), limit): storable_json(v, limit, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable_json(v, limit, depth=depth + 1) for v in value]
    return storable(str(value), limit)


def findable(text: str) -> bool:
    """Whether a row could hold `text` at all (no NUL, no lone surrogate): a lookup by a
    text that is not findable matches nothing."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
