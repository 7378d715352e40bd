"""Time the request-log pages' queries on a seeded database (ops/seed_request_logs.py).

    python ops/measure_request_logs.py --database-url postgresql://... [--runs 60] [--plans]
    python ops/measure_request_logs.py --database-url ... --gateway-url http://127.0.0.1:8080 \
        --email owner@example.com --password '...'     # the pages themselves, over HTTP

Runs exactly the SQL the console runs (`pooler.store.request_log_query`): the first page
(the last 24 hours, every Pool), the next page, each single filter (values picked from the
data: a busy and a quiet one where it matters), an admin's two Pools, a 30-day range, and
a request's detail. Each is run `--runs` times after one warm-up; prints p50 / p95 / max in
milliseconds as a Markdown table, and with `--plans` each query's EXPLAIN ANALYZE
(abridged to its plan nodes). With `--gateway-url` (a gateway serving that database, and
an operator of it), it times the pages instead: GET of the list with each filter in the
query string, and of a detail page, rendered and sent (sequential requests spaced under
the console's page pace).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pooler.store import request_log_query as q

Case = tuple[str, Callable[[psycopg.Connection[Any]], Any], tuple[str, list[Any]] | None]


def one(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def cases(conn: psycopg.Connection[Any], now: datetime) -> list[Case]:
    day = q.LogFilter(since=now - timedelta(hours=24), until=now)
    pools = [
        r[0]
        for r in conn.execute(
            "SELECT pool_id FROM request_logs GROUP BY pool_id ORDER BY count(*) DESC"
        ).fetchall()
    ]

    def busiest(column: str, where: str = "TRUE") -> Any:
        return one(
            conn,
            f"SELECT {column} FROM request_logs WHERE {where}"
            f" GROUP BY {column} ORDER BY count(*) DESC LIMIT 1",
        )

    def quietest(column: str, where: str = "TRUE") -> Any:
        return one(
            conn,
            f"SELECT {column} FROM request_logs WHERE {column} IS NOT NULL"
            f" AND {where} GROUP BY {column} ORDER BY count(*) LIMIT 1",
        )

    busy_key, quiet_key = busiest("key_prefix"), quietest("key_prefix")
    key_name = one(conn, "SELECT name FROM pool_api_keys WHERE key_prefix = %s", (busy_key,))
    account = busiest("account_id", "account_id IS NOT NULL")
    label = one(conn, "SELECT label FROM upstream_accounts WHERE id = %s", (account,))
    first = q.fetch_page(conn, day)
    assert first.next is not None, "seed more rows: the first page is the last"
    detail_id = one(
        conn,
        "SELECT l.id FROM request_logs l JOIN request_attempts a"
        " ON a.request_id = l.request_id AND a.attempt = 2 LIMIT 1",
    )

    def page(flt: q.LogFilter, cursor: q.Cursor | None = None) -> Case:
        return (
            "",
            lambda c: q.fetch_page(c, flt, cursor),
            q.page_sql(flt, cursor, q.PAGE_SIZE + 1),
        )

    def given(**values: str) -> q.LogFilter:
        return q.resolve(conn, q.parse_filter(values, now), None)

    def named(name: str, built: Case) -> Case:
        return (name, built[1], built[2])

    month = {"from": (now - timedelta(days=30)).isoformat()}
    out: list[Case] = [
        named("first page (24 h, every Pool)", page(day)),
        named("next page (keyset)", page(day, first.next)),
        named("pool (the busiest)", page(given(pool=str(pools[0])))),
        named("pool (the quietest)", page(given(pool=str(pools[-1])))),
        named("admin's 2 Pools", page(q.LogFilter(day.since, day.until, frozenset(pools[-2:])))),
        named("key prefix (busy)", page(given(key=busy_key))),
        named("key prefix (quiet)", page(given(key=quiet_key))),
        (
            "key name (resolve + page)",
            lambda c: q.fetch_page(c, q.resolve(c, q.parse_filter({"key": key_name}, now), None)),
            None,
        ),
        named("account id", page(given(account=str(account)))),
        (
            "account label (resolve + page)",
            lambda c: q.fetch_page(c, q.resolve(c, q.parse_filter({"account": label}, now), None)),
            None,
        ),
        named("status 2xx", page(given(status="2xx"))),
        named("status 4xx", page(given(status="4xx"))),
        named("status 5xx", page(given(status="5xx"))),
        named(
            "error code (common)",
            page(given(error=busiest("error_code", "error_code IS NOT NULL"))),
        ),
        named("error code (rare)", page(given(error=quietest("error_code")))),
        named("model (common)", page(given(model=busiest("model")))),
        named("model (rare)", page(given(model=quietest("model")))),
        named("route (common)", page(given(route=busiest("route")))),
        named("route (rare)", page(given(route=quietest("route")))),
        named("transport websocket", page(given(transport="websocket"))),
        named("transport http_json", page(given(transport="http_json"))),
        named("continuity moved", page(given(continuity="moved"))),
        named("continuity disabled", page(given(continuity="disabled"))),
        named(
            "30 days, every Pool", page(given(**{"from": (now - timedelta(days=30)).isoformat()}))
        ),
        named(
            "30 days, rare model",
            page(
                given(model=quietest("model"), **{"from": (now - timedelta(days=30)).isoformat()})
            ),
        ),
        named("route matching nothing (24 h)", page(given(route="no_such_route"))),
        named("model matching nothing (24 h)", page(given(model="no-such-model"))),
        named("30 days, rare route", page(given(route=quietest("route"), **month))),
        named("30 days, continuity disabled", page(given(continuity="disabled", **month))),
        named("30 days, transport http_json", page(given(transport="http_json", **month))),
        named("30 days, status 5xx", page(given(status="5xx", **month))),
        named("30 days, route matching nothing", page(given(route="no_such_route", **month))),
        ("detail (row + attempts)", lambda c: q.fetch_detail(c, detail_id, None), None),
    ]
    return out


def page_urls(conn: psycopg.Connection[Any], now: datetime) -> list[tuple[str, str]]:
    """(name, path) of the pages timed over HTTP: the list with each single filter."""
    from urllib.parse import urlencode

    def busiest(column: str) -> Any:
        return one(
            conn,
            f"SELECT {column} FROM request_logs WHERE {column} IS NOT NULL"
            f" GROUP BY {column} ORDER BY count(*) DESC LIMIT 1",
        )

    def quietest(column: str) -> Any:
        return one(
            conn,
            f"SELECT {column} FROM request_logs WHERE {column} IS NOT NULL"
            f" GROUP BY {column} ORDER BY count(*) LIMIT 1",
        )

    detail_id = one(
        conn,
        "SELECT l.id FROM request_logs l JOIN request_attempts a"
        " ON a.request_id = l.request_id AND a.attempt = 2 LIMIT 1",
    )
    account = busiest("account_id")
    filters: list[tuple[str, dict[str, str]]] = [
        ("first page", {}),
        ("pool", {"pool": str(busiest("pool_id"))}),
        ("key prefix", {"key": busiest("key_prefix")}),
        (
            "key name",
            {
                "key": one(
                    conn,
                    "SELECT name FROM pool_api_keys WHERE key_prefix = %s",
                    (quietest("key_prefix"),),
                )
            },
        ),
        ("account id", {"account": str(account)}),
        (
            "account label",
            {"account": one(conn, "SELECT label FROM upstream_accounts WHERE id = %s", (account,))},
        ),
        ("status 5xx", {"status": "5xx"}),
        ("error code (rare)", {"error": quietest("error_code")}),
        ("model (rare)", {"model": quietest("model")}),
        ("route (rare)", {"route": quietest("route")}),
        ("transport http_json", {"transport": "http_json"}),
        ("continuity moved", {"continuity": "moved"}),
        ("30 days", {"from": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")}),
    ]
    urls = [(name, "/admin/request-logs?" + urlencode(params)) for name, params in filters]
    return [*urls, ("detail", f"/admin/request-logs/{detail_id}")]


def measure_http(args: argparse.Namespace, conn: psycopg.Connection[Any], now: datetime) -> None:
    import re

    import httpx

    with httpx.Client(base_url=args.gateway_url, timeout=30) as client:
        login = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token, "no sign-in form"
        signed = client.post(
            "/login",
            data={"csrf_token": token.group(1), "email": args.email, "password": args.password},
        )
        assert signed.status_code == 303, signed.status_code
        print("| page (HTTP GET, rendered) | p50 ms | p95 ms | max ms | bytes |")
        print("|---|---:|---:|---:|---:|")
        for name, path in page_urls(conn, now):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            times = []
            for _ in range(args.runs):
                time.sleep(0.11)  # below the console's page pace (10 a second per session)
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
            p50 = statistics.median(times)
            print(f"| {name} | {p50:.1f} | {p95:.1f} | {times[-1]:.1f} | {len(response.content)} |")


def plan(conn: psycopg.Connection[Any], sql: str, params: list[Any]) -> list[str]:
    rows = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF, SUMMARY ON) {sql}", params)
    kept = []
    for (line,) in rows.fetchall():
        if (
            "Filter:" in line
            or "Cond:" in line
            or "->" in line
            or line[:1] != " "
            or "Execution" in line
        ):
            kept.append(line)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--plans", action="store_true")
    parser.add_argument("--gateway-url")
    parser.add_argument("--email", default="owner@example.com")
    parser.add_argument("--password", default="")
    args = parser.parse_args(argv)
    if args.gateway_url:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            measure_http(args, conn, datetime.now(UTC))
        return 0
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        total = one(conn, "SELECT count(*) FROM request_logs")
        now = datetime.now(UTC)
        print(f"{total:,} request logs; {args.runs} runs each; {now:%Y-%m-%d %H:%M} UTC\n")
        print("| query | p50 ms | p95 ms | max ms | rows |")
        print("|---|---:|---:|---:|---:|")
        plans = []
        for name, run, sql in cases(conn, now):
            result = run(conn)  # warm-up
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                result = run(conn)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
            rows = len(result.rows) if isinstance(result, q.Page) else 1
            p50 = statistics.median(times)
            print(f"| {name} | {p50:.1f} | {p95:.1f} | {times[-1]:.1f} | {rows} |")
            if sql is not None:
                plans.append((name, plan(conn, *sql)))
        if args.plans:
            for name, lines in plans:
                print(f"\n{name}:\n```")
                print("\n".join(lines))
                print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
