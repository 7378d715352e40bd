"""Lease-decision cost with many accounts in a Pool (DESIGN §9: p99 <= 20 µs at 1,000).

Measures what the PoolSupervisor does for one request, in-process and without I/O: bring
the Pool's order up to date with the accounts that changed since the last request (the
chosen account's in-flight count went up, an earlier request's account went down), then
choose: continuity pin, per-request checks, the first few candidates in strategy order.

    python ops/bench/lease_decision.py [--accounts 1000] [--requests 20000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pooler.routing.choose import Pin, PoolPolicy, PoolRouter
from pooler.routing.snapshot import AccountSnapshot, WindowState

STRATEGIES = ("least_used", "round_robin", "fill_first", "weighted")
IN_FLIGHT_PER_REQUEST = 8  # each request's lease is released this many requests later


def _percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def run_case(
    strategy: str, accounts: int, requests: int, blocked_share: float, pinned_share: float
) -> dict[str, object]:
    rng = random.Random(7)
    now = 1_800_000_000.0
    snapshots: dict[str, AccountSnapshot] = {}
    for index in range(accounts):
        used = rng.uniform(0, 90)
        if rng.random() < blocked_share:
            used = 100.0  # out of quota until an hour from now
        snapshots[f"acct-{index:05d}"] = AccountSnapshot(
            f"acct-{index:05d}",
            f"acct-{index:05d}",
            max_in_flight=64,
            primary=WindowState(used, now + 3600, now),
        )
    weights = {a: rng.randint(1, 5) for a in snapshots} if strategy == "weighted" else {}
    router = PoolRouter(
        PoolPolicy("p", strategy, weights=weights), list(snapshots), snapshots.get, now
    )
    ids = list(snapshots)
    leases: deque[str] = deque()
    samples: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(requests):
            now += 0.001
            pin = Pin(rng.choice(ids)) if rng.random() < pinned_share else None
            # The actors publish their new snapshots (not the supervisor's work, untimed):
            # the previous request's confirm, and the release of an older one.
            changed = [leases[-1]] if leases else []
            if len(leases) > IN_FLIGHT_PER_REQUEST:
                released = leases.popleft()
                snap = snapshots[released]
                snapshots[released] = replace(snap, in_flight=max(0, snap.in_flight - 1))
                changed.append(released)
            started = time.perf_counter_ns()
            for account_id in changed:
                router.touch(account_id, now)
            choice = router.choose(now, model="gpt-5.5", pin=pin, limit=3)
            samples.append(time.perf_counter_ns() - started)
            if choice.candidates:
                chosen = choice.candidates[0].account_id
                snap = snapshots[chosen]
                snapshots[chosen] = replace(snap, in_flight=snap.in_flight + 1)
                leases.append(chosen)
    finally:
        gc.enable()
    return {
        "strategy": strategy,
        "accounts": accounts,
        "blocked_share": blocked_share,
        "pinned_share": pinned_share,
        "p50_us": round(_percentile(samples, 0.50), 2),
        "p99_us": round(_percentile(samples, 0.99), 2),
        "max_us": round(max(samples) / 1000.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cases = [
        run_case(strategy, args.accounts, args.requests, blocked, pinned)
        for strategy in STRATEGIES
        for blocked, pinned in ((0.0, 0.0), (0.5, 0.5))
    ]
    if args.json:
        print(json.dumps(cases))
        return 0
    print(f"lease decision, {args.accounts} accounts, {args.requests} requests per case")
    print(
        f"{'strategy':<12} {'blocked':>7} {'pinned':>6} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8}"
    )
    for c in cases:
        print(
            f"{c['strategy']:<12} {c['blocked_share']:>7.0%} {c['pinned_share']:>6.0%}"
            f" {c['p50_us']:>8} {c['p99_us']:>8} {c['max_us']:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
