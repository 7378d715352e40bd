"""What every `pooler` command shares: its user error, the database it opens, and how an
admin command takes `--json`, runs against the store and prints its answer.

The command modules (`run`, `admin`, `admin_keys`, `admin_settings`) import from here and
never from each other, so the CLI has no import cycle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from pooler.config import Config, load_config
from pooler.db import Database, DatabaseError
from pooler.embedded import resolve_database_url
from pooler.migrate import migrate
from pooler.store.common import Conn, StoreError
from pooler.store.text import storable

T = TypeVar("T")


class CommandError(Exception):
    """A command failed for a reason the user can fix; printed without a traceback."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_database(config: Config, **pool: Any) -> tuple[str, Database]:
    """The migrated database of `config`, opened (`pool`: Database.open's sizes)."""
    url = migrated_url(config)
    try:
        return url, Database.open(url, **pool)
    except Exception as exc:
        raise CommandError(f"cannot open the database: {one_line(exc)}") from exc


def migrated_url(config: Config) -> str:
    """The database URL of `config` (the embedded server started if need be), migrated; a
    database that cannot be reached is a CommandError naming the cause."""
    try:
        url = resolve_database_url(config)
        migrate(url)
    except Exception as exc:
        raise CommandError(f"cannot open the database: {one_line(exc)}") from exc
    return url


def with_json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with the `--json` flag every admin command takes."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run_in_store(fn: Callable[[Conn], T]) -> T:
    """`fn` run in one transaction on the configured database; a store refusal or a database
    failure is a CommandError."""
    _, db = open_database(load_config(), min_size=1, max_size=1)
    try:
        return db.run_sync(fn)
    except StoreError as exc:
        raise CommandError(exc.message) from exc
    except DatabaseError as exc:
        raise CommandError(f"the database failed: {one_line(exc)}") from exc
    finally:
        db.close()


def plain(value: Any) -> Any:
    """`value` (store records, lists, dicts) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit(args: argparse.Namespace, value: Any, text: str) -> int:
    """Print `value` as JSON when `--json` was given, else `text`; the exit status."""
    print(json.dumps(plain(value), indent=2) if args.json else text)
    return 0


def table(rows: list[list[str]], header: list[str]) -> str:
    # Names stored before they were checked may hold terminal escapes: print them escaped.
    cells = [header, *([storable(cell, 1_000) or "" for cell in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
