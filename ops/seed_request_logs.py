"""Fill a database with synthetic request logs for measuring the request-log pages.

    python ops/seed_request_logs.py --rows 1000000 --database-url postgresql://...

Migrates the database, creates a few Pools, keys and accounts (real rows, so key names and
account labels resolve), then COPYs `--rows` request logs spread over `--days` days (in
time order, as the LogWriter writes them; busier by day than by night) across them, with
a realistic mix of models, routes, transports, status classes, error codes and continuity
outcomes, and attempts for ~5% of rows (the failovers). Metadata only, like real rows.
Deterministic for a given `--seed`. Never point it at a database that matters: it adds
rows and Pools and makes no attempt to remove them.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pooler.migrate import migrate

LOG_COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "pool_id",
    "key_prefix",
    "route",
    "transport",
    "model",
    "stream",
    "status_code",
    "outcome",
    "error_code",
    "account_id",
    "account_label",
    "retries",
    "duration_ms",
    "ttfb_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "exclusions",
    "client_user_agent",
    "continuity",
    "continuity_from",
    "client_request_id",
    "client_ip",
    "request_bytes",
    "response_bytes",
    "routing",
)
ATTEMPT_COLUMNS = (
    "request_id",
    "attempt",
    "started_at",
    "outcome",
    "account_id",
    "account_label",
    "duration_ms",
    "status_code",
    "error_code",
    "ttfb_ms",
)
MODELS = (
    ("gpt-5.1-codex", 50),
    ("gpt-5.1-codex-mini", 20),
    ("gpt-5.1", 15),
    ("gpt-5-codex", 10),
    ("gpt-4.1", 4),
    ("o4-mini", 1),
)
# (route, transport, weight)
ROUTES = (
    ("responses", "websocket", 40),
    ("responses", "http_sse", 35),
    ("v1_responses", "http_sse", 8),
    ("v1_chat", "http_sse", 6),
    ("compact", "http_json", 5),
    ("files", "http", 3),
    ("transcribe", "http", 1.5),
    ("v1_images", "http", 1),
    ("realtime_calls", "http", 0.5),
)
# (status, outcome, error code, weight)
STATUSES = (
    (200, "completed", None, 930),
    (200, "stream_failed", "upstream_stream_closed", 4),
    (400, "refused", "invalid_request", 12),
    (401, "refused", "invalid_api_key", 8),
    (403, "refused", "model_not_allowed", 4),
    (404, "refused", "model_not_found", 3),
    (413, "refused", "body_too_large", 1),
    (429, "refused", "usage_limit_reached", 15),
    (429, "refused", "key_rate_limited", 3),
    (499, "client_closed", "client_disconnected", 5),
    (502, "upstream_error", "upstream_unavailable", 6),
    (503, "refused", "no_account_available", 5),
    (504, "upstream_error", "upstream_timeout", 3),
)
CONTINUITY = (("kept", 60), ("new", 15), ("none", 20), ("moved", 3), ("disabled", 2))
AGENTS = (
    "codex_cli_rs/0.63.0 (Debian 12; x86_64) xterm-256color",
    "OpenAI/Python 1.109.1",
    "codex_vscode/0.63.0",
    "curl/8.5.0",
)


def weighted(pairs: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[float]]:
    return list(pairs), [float(p[-1]) for p in pairs]


def setup(
    conn: psycopg.Connection[Any], rng: random.Random, pools: int, keys: int, accounts: int
) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, str]], list[tuple[uuid.UUID, uuid.UUID, str]]]:
    """Pools, keys (pool, prefix) and accounts (pool, id, label), as real rows."""
    stamp = uuid.uuid4().hex[:6]
    pool_ids = [
        conn.execute(
            "INSERT INTO pools (name) VALUES (%s) RETURNING id", (f"bench-{stamp}-{n}",)
        ).fetchone()[0]  # type: ignore[index]
        for n in range(pools)
    ]
    key_rows = []
    for n in range(keys):
        pool = pool_ids[n % pools]
        prefix = "sk-cxp-" + "".join(
            rng.choice("abcdefghijkmnopqrstuvwxyz23456789") for _ in range(5)
        )
        digest = hashlib.sha256(f"{stamp}{n}".encode()).digest()
        conn.execute(
            "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest)"
            " VALUES (%s, %s, %s, %s)",
            (pool, f"bench key {n}", prefix, digest),
        )
        key_rows.append((pool, prefix))
    account_rows = []
    for n in range(accounts):
        pool = pool_ids[n % pools]
        label = f"bench-{stamp}-account-{n}"
        account_id = conn.execute(
            "INSERT INTO upstream_accounts (label, chatgpt_account_id) VALUES (%s, %s)"
            " RETURNING id",
            (label, f"acct-{stamp}-{n}"),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO pool_assignments (pool_id, account_id) VALUES (%s, %s)", (pool, account_id)
        )
        account_rows.append((pool, account_id, label))
    return pool_ids, key_rows, account_rows


def times(rng: random.Random, rows: int, days: int, end: datetime) -> list[datetime]:
    """`rows` times over `days` days before `end`, oldest first, busier by day (UTC)."""
    start = end - timedelta(days=days)
    span = days * 86400.0
    out: list[float] = []
    while len(out) < rows:
        t = rng.random() * span
        hour = ((start.timestamp() + t) % 86400) / 3600
        if rng.random() < 0.35 + 0.65 * (0.5 + 0.5 * math.sin((hour - 8) / 24 * 2 * math.pi)):
            out.append(t)
    out.sort()
    # Some rows share a timestamp (a batch written in one millisecond): keep ms precision.
    return [start + timedelta(milliseconds=int(t * 1000)) for t in out]


def log_rows(
    rng: random.Random,
    rows: int,
    days: int,
    keys: list[tuple[uuid.UUID, str]],
    accounts: list[tuple[uuid.UUID, uuid.UUID, str]],
    failovers: list[tuple[str, datetime, list[tuple[uuid.UUID, str]]]],
) -> Iterator[tuple[Any, ...]]:
    models, model_w = weighted(MODELS)
    routes, route_w = weighted(ROUTES)
    statuses, status_w = weighted(STATUSES)
    conts, cont_w = weighted(CONTINUITY)
    key_w = [1 / (n + 1) for n in range(len(keys))]  # a few busy keys, many quiet ones
    by_pool: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
    for pool, account_id, label in accounts:
        by_pool.setdefault(pool, []).append((account_id, label))
    end = datetime.now(UTC).replace(microsecond=0)
    for created_at in times(rng, rows, days, end):
        pool, prefix = rng.choices(keys, key_w)[0]
        model = rng.choices(models, model_w)[0][0]
        route, transport, _ = rng.choices(routes, route_w)[0]
        status, outcome, error, _ = rng.choices(statuses, status_w)[0]
        pool_accounts = by_pool[pool]
        account_id, label = rng.choice(pool_accounts)
        continuity = rng.choices(conts, cont_w)[0][0]
        request_id = f"req_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        retries = 0
        if rng.random() < 0.05 and len(pool_accounts) > 1:
            tried = rng.sample(pool_accounts, min(len(pool_accounts), rng.choice((2, 2, 3))))
            account_id, label = tried[-1]
            retries = len(tried) - 1
            failovers.append((request_id, created_at, tried))
        served = status < 400 or status in (499, 502, 504)
        usage = served and status == 200
        inp = rng.randint(200, 60000) if usage else None
        cached = int(inp * rng.random() * 0.9) if inp else None
        out = rng.randint(10, 4000) if usage else None
        reasoning = int(out * rng.random() * 0.5) if out else None
        duration = round(rng.lognormvariate(7.5, 1.0), 1)
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            request_id,
            created_at,
            pool,
            prefix,
            route,
            transport,
            model,
            transport != "http_json",
            status,
            outcome,
            error,
            account_id if served else None,
            label if served else None,
            retries,
            duration,
            round(duration * rng.uniform(0.05, 0.4), 1) if served else None,
            inp,
            cached,
            out,
            reasoning,
            (inp or 0) + (out or 0) if usage else None,
            Jsonb({label: "usage_limit_reached"}) if status == 503 else None,
            rng.choice(AGENTS),
            continuity,
            account_id if continuity == "moved" else None,
            f"cli-{rng.getrandbits(48):012x}" if rng.random() < 0.7 else None,
            f"10.{rng.randint(0, 9)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            rng.randint(300, 400000),
            rng.randint(200, 80000) if served else rng.randint(100, 400),
            Jsonb(
                {
                    "strategy": "least_used",
                    "candidates": [
                        {
                            "label": a_label,
                            "verdict": "chosen" if a_id == account_id else "more used",
                        }
                        for a_id, a_label in pool_accounts[:4]
                    ],
                }
            )
            if served
            else None,
        )


def attempt_rows(
    failovers: list[tuple[str, datetime, list[tuple[uuid.UUID, str]]]], rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    for request_id, created_at, tried in failovers:
        at = created_at
        for n, (account_id, label) in enumerate(tried, start=1):
            last = n == len(tried)
            duration = round(rng.uniform(20, 900), 1)
            yield (
                request_id,
                n,
                at,
                "completed" if last else "failed",
                account_id,
                label,
                duration,
                200 if last else rng.choice((429, 502, 503)),
                None if last else rng.choice(("usage_limit_reached", "upstream_unavailable")),
                round(duration * 0.3, 1),
            )
            at += timedelta(milliseconds=duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pools", type=int, default=6)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--accounts", type=int, default=24)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.monotonic()
    migrate(args.database_url)
    with psycopg.connect(args.database_url) as conn:
        pools, keys, accounts = setup(conn, rng, args.pools, args.keys, args.accounts)
        failovers: list[tuple[str, datetime, list[tuple[uuid.UUID, str]]]] = []
        with conn.cursor() as cur:
            with cur.copy(f"COPY request_logs ({', '.join(LOG_COLUMNS)}) FROM STDIN") as copy:
                for n, row in enumerate(
                    log_rows(rng, args.rows, args.days, keys, accounts, failovers), 1
                ):
                    copy.write_row(row)
                    if n % 100_000 == 0:
                        print(f"{n} rows ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            with cur.copy(
                f"COPY request_attempts ({', '.join(ATTEMPT_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in attempt_rows(failovers, rng):
                    copy.write_row(row)
        conn.commit()
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE request_logs")
        conn.execute("VACUUM ANALYZE request_attempts")
    print(
        f"{args.rows} request logs ({len(failovers)} with attempts) in {len(pools)} Pools,"
        f" {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
