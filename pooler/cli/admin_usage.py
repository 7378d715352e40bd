"""`pooler admin usage --pool NAME --since 7d [--json]`: a Pool's requests, tokens and
API-equivalent cost per UTC day, per key and per account (pooler.store.usage_report), from
the rollups the stats page reads. Costs are exact decimals: strings in the JSON."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from pooler.cli.common import emit, run_in_store, table, with_json
from pooler.store.usage_report import MAX_SPAN, UsageLine, UsageReport, usage_report

_SPAN: Final = re.compile(r"([1-9][0-9]{0,4})([hd])")


def register_usage(groups: Any) -> None:
    usage = groups.add_parser(
        "usage",
        help="a Pool's requests, tokens and API-equivalent cost per day, key and account",
    )
    usage.add_argument("--pool", required=True, help="the Pool's name")
    usage.add_argument(
        "--since",
        type=parse_span,
        default=parse_span("7d"),
        help="how far back: 24h, 7d, 30d (hours or days; default 7d)",
    )
    with_json(usage).set_defaults(handler=usage_show)


def parse_span(text: str) -> timedelta:
    """`24h`, `7d`: a number of hours or days, up to MAX_SPAN."""
    found = _SPAN.fullmatch(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text[:40]!r} (a number of hours or days, e.g. 24h, 7d, 30d)"
        )
    number, unit = int(found[1]), found[2]
    span = timedelta(hours=number) if unit == "h" else timedelta(days=number)
    if span > MAX_SPAN:
        raise argparse.ArgumentTypeError(f"at most {MAX_SPAN.days} days")
    return span


def usage_show(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    report = run_in_store(lambda conn: usage_report(conn, args.pool, args.since, now))
    return emit(args, as_json(report), as_text(report))


def dollars(value: Decimal) -> str:
    """The exact cost as a plain decimal (no exponent)."""
    return format(value.normalize(), "f") if value else "0"


def shown_dollars(value: Decimal) -> str:
    return f"${value:,.2f}" if value >= Decimal("0.01") or not value else f"${value:.6f}"


def as_json(report: UsageReport) -> dict[str, Any]:
    def one(x: UsageLine) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": x.requests,
            "errors": x.errors,
            "input_tokens": x.input_tokens,
            "cached_input_tokens": x.cached_input_tokens,
            "output_tokens": x.output_tokens,
            "reasoning_tokens": x.reasoning_tokens,
            "cost_usd": dollars(x.cost_usd),
            "unpriced_requests": x.unpriced_requests,
        }
        return out

    return {
        "pool": report.pool,
        "since": report.since,
        "until": report.until,
        "total": one(report.total),
        "days": [{"day": x.name, **one(x)} for x in report.days],
        "keys": [{"key": x.name, "key_prefix": x.id, **one(x)} for x in report.keys],
        "accounts": [{"account": x.name, "account_id": x.id, **one(x)} for x in report.accounts],
    }


HEADER: Final = ["REQUESTS", "INPUT", "CACHED", "OUTPUT", "REASONING", "COST (API)"]


def _cells(x: UsageLine) -> list[str]:
    cost = shown_dollars(x.cost_usd)
    if x.unpriced_requests:
        cost += f" (+{x.unpriced_requests} unpriced)"
    return [
        str(x.requests),
        str(x.input_tokens),
        str(x.cached_input_tokens),
        str(x.output_tokens),
        str(x.reasoning_tokens),
        cost,
    ]


def as_text(report: UsageReport) -> str:
    t = report.total
    parts = [
        f"Pool {report.pool}: {report.since:%Y-%m-%d %H:00} to {report.until:%Y-%m-%d %H:00} UTC",
        f"{t.requests} requests, API-equivalent cost {shown_dollars(t.cost_usd)}"
        " (what this traffic would have cost at OpenAI's API list prices)",
    ]
    if t.unpriced_requests:
        parts.append(f"{t.unpriced_requests} request(s) of models without a price are not counted")
    for title, first, lines in (
        ("Per day (UTC)", "DAY", report.days),
        ("Per key", "KEY", report.keys),
        ("Per account", "ACCOUNT", report.accounts),
    ):
        parts += ["", title, table([[x.name, *_cells(x)] for x in lines], [first, *HEADER])]
    return "\n".join(parts)
