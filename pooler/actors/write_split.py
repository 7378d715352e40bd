"""Writing a batch that the database may refuse because of one item in it.

Every write-behind (request logs, quota evidence, continuity pins) writes many items in one
transaction. If one item's values are refused (a data error: a NUL that slipped through, a
number out of range, a CHECK constraint), retrying the batch would fail forever and wedge
the writer behind it. So a refused batch is split in halves, each written on its own, down
to the single items that are refused alone: everything else is written (log2(n) extra
writes per bad item), and the caller decides what to do with the refused ones.

A failure that is not about the values (the database away, DatabaseUnavailable) propagates
unchanged: the caller keeps the batch and retries it later, whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from pooler.db import DatabaseDataError

Item = TypeVar("Item")

# ValueError covers what the driver raises before sending (UnicodeEncodeError for a lone
# surrogate) and a value our own code cannot convert while building a row.
DATA_ERRORS: Final = (DatabaseDataError, ValueError, OverflowError)


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` says the values were refused (so retrying them cannot help)."""
    return isinstance(exc, DATA_ERRORS)


async def write_splitting(
    write: Callable[[Sequence[Item]], Awaitable[object]], items: Sequence[Item]
) -> list[Item]:
    """Write `items` in as few transactions as the database accepts; return the items it
    refused one by one (in order). Raises what `write` raised for any other reason."""
    if not items:
        return []
    try:
        await write(items)
        return []
    except DATA_ERRORS:
        if len(items) == 1:
            return list(items)
    middle = len(items) // 2
    refused = await write_splitting(write, items[:middle])
    return refused + await write_splitting(write, items[middle:])
