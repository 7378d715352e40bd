"""The shape of an upstream file id: the one check a client's file id passes before it
reaches an upstream request target (`/files/{id}/uploaded`) or a database lookup.

The backend's ids are opaque tokens: `file-<base62>` in older answers, `file_<hex>` in newer
ones (the emulator mints the latter). Letters, digits, `_` and `-` cover both; nothing that
means something in a URL (`/`, `.`, `?`, `#`, `%`, spaces) or to a database (NUL) can pass.
The check is on the id exactly as it appears in the request target (before percent
decoding): an id the backend minted never needs escaping, so an escaped one is not an id.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

from pooler.errors import BadRequest

MAX_FILE_ID: Final = 200
_FILE_ID: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_FILE_ID}}}")


def is_file_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _FILE_ID.fullmatch(value) is not None


def check_file_id(value: object, param: str = "file_id") -> str:
    """`value` if it has a file id's shape; else a 400 `invalid_file_id` naming `param`.
    The value is not echoed: it is the client's, and may be anything."""
    if isinstance(value, str) and _FILE_ID.fullmatch(value):
        return value
    raise BadRequest(
        f"'{param}' is not a valid file id (letters, digits, '_' and '-', "
        f"1 to {MAX_FILE_ID} characters)",
        code="invalid_file_id",
        param=param,
    )
