"""Soak: minutes of mixed honest and hostile traffic against one gateway process.

    python ops/bench/soak.py                 # 10 minutes (the issue-11 acceptance run)
    python ops/bench/soak.py --minutes 1     # a quick look

Starts the emulator and a real `pooler serve` (embedded PostgreSQL) as in the benchmark,
seeds a Pool, then runs honest workers (SSE, /v1 chat, websocket sessions) beside a hostile
worker that cycles through every hostile input of issue 11 (soak_cases.py) and a few
slow-body connections at a time. Not part of CI.

It checks, and exits non-zero when one fails:
- every hostile case got the answer it should (a 4xx in protocol, a closed connection),
  never a 5xx, a hang or a served smuggled request;
- after a graceful stop (SIGTERM) the request log holds a row for every answer that carried
  an `x-request-id`, and one websocket row per answered turn: nothing answered is unlogged;
- the gateway's RSS at the end is within 20 % of its RSS after the warm-up. The warm-up is
  honest traffic until the conversation pins (the largest bounded state, 100,000 per Pool)
  are full, so that the baseline is the steady state; the RSS after the first 20 s is
  reported beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import soak_cases as cases
import trio
from cluster import POOL, Cluster, rss_bytes

from pooler import embedded

COLD_S = 20.0
# The largest bounded state is the conversation pins (100,000 per Pool, about 25 MiB): the
# memory baseline is taken once they are full, so that filling them is not read as growth.
PIN_BOUND = 100_000
WARMUP_MAX_S = 900.0
SETTLE_S = 10.0
RSS_SAMPLE_S = 10.0
SLOW_BODIES_AT_ONCE = 20
HONEST_WORKERS = 4
RSS_TOLERANCE = 0.20


def log(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def _once(
    case: cases.Case, client: httpx.AsyncClient, target: cases.Target, tally: cases.Tally
) -> None:
    try:
        with trio.fail_after(cases.CASE_TIMEOUT_S * 3):
            await case(client, target, tally)
    except trio.TooSlowError:
        tally.saw(case.__name__, "hang", expected=set())
    except Exception as exc:  # a broken answer is a finding, not the end of the soak
        tally.saw(case.__name__, f"raised-{type(exc).__name__}", expected=set())


async def _loop(
    until: float,
    case: cases.Case,
    client: httpx.AsyncClient,
    target: cases.Target,
    tally: cases.Tally,
    pause: float = 0.0,
) -> None:
    while trio.current_time() < until:
        await _once(case, client, target, tally)
        await trio.sleep(pause)


async def _hostile(
    until: float, client: httpx.AsyncClient, target: cases.Target, tally: cases.Tally
) -> None:
    """Every hostile case in turn, again and again, one at a time."""
    while trio.current_time() < until:
        for case in cases.HOSTILE:
            if trio.current_time() >= until:
                return
            await _once(case, client, target, tally)
            await trio.sleep(0.2)


async def _rss_sampler(pid: int, until: float, samples: list[tuple[float, int]]) -> None:
    while trio.current_time() < until:
        samples.append((trio.current_time(), rss_bytes(pid)))
        await trio.sleep(RSS_SAMPLE_S)


async def pins_held(client: httpx.AsyncClient) -> int:
    metrics = (await client.get("/metrics")).text
    found = re.search(r"^codex_pooler_continuity_pins (\S+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


async def _warm_up(
    client: httpx.AsyncClient, target: cases.Target, tally: cases.Tally, gateway_pid: int
) -> tuple[int, int]:
    """Honest traffic until the pins are full (or WARMUP_MAX_S): the RSS after COLD_S, and
    the pins held at the end."""
    rss_cold, pins = 0, 0
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(HONEST_WORKERS):
            for case in cases.HONEST:
                nursery.start_soon(_loop, start + WARMUP_MAX_S, case, client, target, tally, 0)
        while pins < PIN_BOUND and trio.current_time() - start < WARMUP_MAX_S:
            await trio.sleep(5)
            if not rss_cold and trio.current_time() - start >= COLD_S:
                rss_cold = rss_bytes(gateway_pid)
            pins = await pins_held(client)
        nursery.cancel_scope.cancel()
    return rss_cold, pins


async def drive(target: cases.Target, gateway_pid: int, seconds: float) -> dict[str, Any]:
    tally = cases.Tally()
    samples: list[tuple[float, int]] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=target.base,
        headers={"authorization": f"Bearer {target.key}"},
        timeout=cases.CASE_TIMEOUT_S,
        limits=limits,
    ) as client:
        log(f"warm-up: honest traffic until the conversation pins reach {PIN_BOUND:,}")
        rss_cold, pins = await _warm_up(client, target, tally, gateway_pid)
        rss_start = rss_bytes(gateway_pid)
        log(
            f"gateway RSS: {rss_cold / 2**20:.1f} MiB after {COLD_S:.0f} s, "
            f"{rss_start / 2**20:.1f} MiB with {pins:,} pins; soaking {seconds:.0f} s"
        )
        until = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_rss_sampler, gateway_pid, until, samples)
            for _ in range(HONEST_WORKERS):
                for case in cases.HONEST:
                    nursery.start_soon(_loop, until, case, client, target, tally, 0.02)
            nursery.start_soon(_hostile, until, client, target, tally)
            for _ in range(SLOW_BODIES_AT_ONCE):
                nursery.start_soon(_loop, until, cases.slow_body, client, target, tally)
        log(f"traffic stopped; settling {SETTLE_S:.0f} s")
        await trio.sleep(SETTLE_S)
        rss_end = rss_bytes(gateway_pid)
    peak = max([rss for _, rss in samples] + [rss_start, rss_end])
    return {
        "tally": tally,
        "rss_cold": rss_cold,
        "pins": pins,
        "rss_start": rss_start,
        "rss_peak": peak,
        "rss_end": rss_end,
        "seconds": seconds,
    }


def stored_rows(data_dir: Path, since: dt.datetime) -> tuple[set[str], int]:
    """Request ids of the rows written since `since`, and how many are websocket rows."""
    url = embedded.start_embedded_postgres(data_dir)
    try:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT request_id, transport FROM request_logs WHERE created_at >= %s",
                (since,),
            ).fetchall()
    finally:
        embedded.release_embedded_postgres(data_dir)
    ids = {rid for rid, transport in rows if transport != "websocket"}
    ws = sum(1 for _, transport in rows if transport == "websocket")
    return ids, ws


def seed_policy_key(cluster: Cluster) -> str:
    out = cluster.admin(
        "key",
        "create",
        "--pool",
        POOL,
        "--name",
        "soak-limited",
        "--json",
        "--allowed-models",
        "gpt-5.5",
        "--reasoning-effort",
        "max:low",
    )
    key: str = json.loads(out)["key"]
    return key


def control_characters_in_names(cluster: Cluster) -> str:
    """Item 10: the admin CLI refuses a Pool name with an ANSI escape (one line, exit 1)."""
    done = subprocess.run(
        [cluster.pooler, "admin", "pool", "create", "bad\x1b[31mname\x07"],
        env=cluster.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    refused = done.returncode != 0 and len(lines) == 1 and "Traceback" not in lines[0]
    return (
        "refused in one line" if refused else f"NOT refused cleanly: {done.returncode} {lines[:3]}"
    )


def report(result: dict[str, Any], ids: set[str], ws_rows: int, names: str) -> list[str]:
    tally: cases.Tally = result["tally"]
    problems = list(tally.failures)
    missing = tally.request_ids - ids
    if missing:
        problems.append(f"{len(missing)} answered requests have no request-log row")
    if ws_rows < tally.ws_turns:
        problems.append(f"{tally.ws_turns} websocket turns answered but {ws_rows} rows")
    growth = result["rss_end"] / max(result["rss_start"], 1) - 1
    if growth > RSS_TOLERANCE:
        problems.append(f"RSS grew {growth:.0%} (more than {RSS_TOLERANCE:.0%})")
    if not names.startswith("refused"):
        problems.append(f"control characters in a Pool name: {names}")
    mib: Callable[[int], str] = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    log("answers by case:")
    for key, count in sorted(tally.answers.items()):
        log(f"  {key}: {count}")
    log(
        f"answered with an x-request-id: {len(tally.request_ids)}; rows found for them: "
        f"{len(tally.request_ids & ids)}; other rows: {len(ids - tally.request_ids)}"
    )
    log(f"websocket turns answered: {tally.ws_turns}; websocket rows: {ws_rows}")
    log(
        f"gateway RSS: {mib(result['rss_cold'])} after {COLD_S:.0f} s of honest traffic; "
        f"with {result['pins']:,} conversation pins held (the baseline) "
        f"{mib(result['rss_start'])}"
    )
    log(
        f"gateway RSS: after warm-up {mib(result['rss_start'])}, peak {mib(result['rss_peak'])}, "
        f"end {mib(result['rss_end'])} ({growth:+.1%})"
    )
    log(f"control characters in a Pool name: {names}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    cases.prepare()
    with Cluster(None, log) as cluster:
        endpoints = cluster.start()
        target = cases.Target(endpoints.gateway_port, endpoints.pool_key, seed_policy_key(cluster))
        names = control_characters_in_names(cluster)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        result = trio.run(drive, target, endpoints.gateway_pid, args.minutes * 60)
        gateway = next(s for s in cluster.services if s.name == "gateway")
        log("stopping the gateway (SIGTERM): its LogWriter flushes on the way out")
        gateway.process.terminate()
        gateway.process.wait(60)
        ids, ws_rows = stored_rows(cluster.root / "data", since)
        problems = report(result, ids, ws_rows, names)
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log("soak passed" if not problems else f"soak failed: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
