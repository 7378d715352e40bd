"""`pooler admin stats rebuild`: recompute the hourly rollups of past hours from the raw
request logs (the Scheduler keeps the recent ones current on its own). An hour whose raw
rows retention has pruned keeps its rollup and is reported as skipped."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from pooler.cli.common import CommandError, emit, one_line, open_database, with_json
from pooler.config import load_config
from pooler.db import DatabaseError
from pooler.store.rollups import HOUR, Recomputed, hour_of, recompute_hours

MAX_HOURS: Final = 24 * 400  # one command rebuilds at most this many hours
HOURS_PER_TRANSACTION: Final = 24


def register_stats(groups: Any) -> None:
    stats = groups.add_parser("stats", help="hourly rollups of the request logs").add_subparsers(
        dest="action", required=True
    )
    rebuild = stats.add_parser(
        "rebuild", help="recompute past hours from the raw request logs (UTC unless stated)"
    )
    which = rebuild.add_mutually_exclusive_group(required=True)
    which.add_argument("--hour", type=parse_hour, help="one hour, e.g. 2026-12-01T13")
    which.add_argument("--from", dest="first", type=parse_hour, help="the first hour of a range")
    rebuild.add_argument("--to", dest="last", type=parse_hour, help="the last hour of a range")
    with_json(rebuild).set_defaults(handler=stats_rebuild)


def parse_hour(text: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given), as the UTC hour holding it."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (e.g. 2026-12-01T13)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return hour_of(moment)


def hours_to_rebuild(args: argparse.Namespace) -> tuple[datetime, datetime]:
    if args.hour is not None:
        if args.last is not None:
            raise CommandError("--to goes with --from, not with --hour")
        return args.hour, args.hour
    if args.last is None:
        raise CommandError("--from needs --to (the last hour of the range)")
    if args.last < args.first:
        raise CommandError("--to is before --from")
    if (args.last - args.first) / HOUR + 1 > MAX_HOURS:
        raise CommandError(f"at most {MAX_HOURS} hours at once")
    return args.first, args.last


def stats_rebuild(args: argparse.Namespace) -> int:
    first, last = hours_to_rebuild(args)
    hours = rows = 0
    pruned: list[datetime] = []
    _, db = open_database(load_config(), min_size=1, max_size=1)
    try:
        start = first
        while start <= last:  # a day per transaction: no long transaction over a long range
            end = min(last, start + (HOURS_PER_TRANSACTION - 1) * HOUR)
            done: Recomputed = db.run_sync(partial(recompute_hours, first=start, last=end))
            hours, rows = hours + done.hours, rows + done.rows
            pruned.extend(done.pruned)
            start = end + HOUR
    except DatabaseError as exc:
        raise CommandError(f"the database failed: {one_line(exc)}") from exc
    finally:
        db.close()
    text = f"rebuilt {hours} hour(s) from {first:%Y-%m-%dT%H}:00Z to {last:%Y-%m-%dT%H}:00Z"
    text += f", {rows} rollup row(s)"
    if pruned:
        text += f"; skipped {len(pruned)} hour(s) whose raw rows were pruned (kept as they were)"
    return emit(
        args,
        {"first": first, "last": last, "hours": hours, "rows": rows, "skipped_pruned": pruned},
        text,
    )
