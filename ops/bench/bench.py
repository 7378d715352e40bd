"""`python ops/bench/bench.py [--quick] [--json]`: Codex Pooler against its floor (DESIGN §9).

Starts the emulator, the floor relay and the gateway (cluster.py), pins the gateway and
the relay to one core and the emulator and this load generator to the other, then runs
every scenario (scenarios.py) over the three paths — direct, floor, gateway — in
interleaved rounds after a warm-up, and reports medians of round medians (report.py).

Per scenario and path, each round has a *saturated* run (closed loop at the scenario's
concurrency: requests/s and CPU per request) and, above c=1, a *latency* run (open loop at
70 % of the slowest path's saturated rate in that round; the same rate on every path).
`--idle-streams N` first holds N idle SSE streams through the gateway (memory per
stream); `--profile S` skips the scenarios and profiles the gateway with py-spy instead.
After the scenarios come two extras on Pools of their own (`--skip-extras` leaves them
out, `--scenario NAME` runs only those): failover (failover.py: one account of
3 answering 500s), cache (cache_run.py: multi-turn conversations and the emulator's
per-account prompt cache), websocket, console (an operator using the admin pages) and mcp
(mcp_run.py: 20 MCP clients on `/mcp` beside a c=50 short load).

`--baseline-tree PATH` (a checkout of an older commit) also starts a gateway from that
tree, on the gateway's core with its own data directory, and measures it as a fourth
path, `baseline`, in every round (idle streams too, one gateway after the other), so
before/after figures come from the same run; the report adds a gateway-vs-baseline
table. The extras and `--profile` measure the current gateway only.

Exit status: 0; 1 when any request failed (the output says so loudly); 2 when the
benchmark could not run; 130 when interrupted. Whatever happens, the processes are
stopped and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import trio
from cache_run import FULL_CACHE, QUICK_CACHE, cache_run
from cluster import Cluster, Endpoints
from console_run import FULL_CONSOLE, QUICK_CONSOLE, console_run
from extras import idle_streams, profile_gateway
from failover import FULL_FAILOVER, QUICK_FAILOVER, failover_run
from mcp_run import FULL_MCP, QUICK_MCP, mcp_run, open_mcp
from paced_run import FULL_PACED, QUICK_PACED, paced_run
from report import Results, error_banner, markdown, to_json
from runner import ForeignLoad, Run, benchmark, log, new_run, wait_until_ready
from scenarios import BASELINE, FULL, QUICK, Plan
from websocket_run import FULL_WS, QUICK_WS, websocket_run

EXTRAS = ("failover", "cache", "websocket", "console", "mcp", "paced")
ON_BENCH_POOL = frozenset(
    {"websocket", "console", "mcp", "paced"}
)  # extras that need no Pool of their own
# Below the 192 streams that 3 accounts x 64 upstream connections allow (see README).
IDLE_STREAMS = 150
DEFAULT_PROFILE_OUT = Path("/tmp/pooler-gateway.speedscope.json")  # never in the repo


def pick_cores() -> tuple[int, int] | None:
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[1]) if len(cores) >= 2 else None


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes SIGINT, which Trio turns into KeyboardInterrupt at a safe point
    # (Python does the same outside trio.run); it unwinds through the Cluster's cleanup.
    os.kill(os.getpid(), signal.SIGINT)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(leaf, kind) for leaf in _leaves(exc))


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 5 min)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=None, help="override the plan's rounds")
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=IDLE_STREAMS,
        metavar="N",
        help=f"hold N idle SSE streams through the gateway first (default {IDLE_STREAMS}, 0: skip)",
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, metavar="S", help="py-spy the gateway for S s"
    )
    parser.add_argument(
        "--ws-held", type=int, default=None, help="idle websocket sessions to hold (extra)"
    )
    parser.add_argument("--profile-out", type=Path, default=DEFAULT_PROFILE_OUT)
    parser.add_argument("--profile-concurrency", type=int, default=50)
    parser.add_argument("--profile-kind", choices=("sse", "short"), default="sse")
    parser.add_argument(
        "--skip-extras", action="store_true", help="leave out the failover and cache runs"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=EXTRAS,
        help="run only this extra (repeatable): no scenarios, no idle streams",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run the gateway from this checkout (e.g. `git worktree add /tmp/old "
        "COMMIT`) as a path `baseline` in every round and in the idle streams, beside the "
        "current one, and report gateway vs baseline; it shares this Python's "
        "site-packages (its missing dependencies are named before the start). The extras "
        "(failover, cache, websocket, console, mcp, paced) run on the current gateway only",
    )
    args = parser.parse_args(argv)
    if args.scenario and args.skip_extras:
        parser.error("--scenario and --skip-extras exclude each other")
    if args.baseline_tree is not None and (args.scenario or args.profile):
        parser.error("--baseline-tree compares the scenarios: not with --scenario or --profile")
    return args


def extras_wanted(args: argparse.Namespace) -> tuple[str, ...]:
    if args.profile or args.skip_extras:
        return ()
    return tuple(name for name in EXTRAS if not args.scenario or name in args.scenario)


def describe(args: argparse.Namespace, plan: Plan, cores: tuple[int, int] | None) -> Results:
    return Results(
        meta={
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
            "cores": {"gateway_relay": cores[0], "emulator_loadgen": cores[1]} if cores else None,
            "loadavg_before": _loadavg(),
            **(
                {"baseline_tree": str(args.baseline_tree.resolve())}
                if args.baseline_tree is not None
                else {}
            ),
            "plan": {
                "quick": args.quick,
                "rounds": plan.rounds,
                "saturated_s": plan.saturated_s,
                "latency_s": plan.latency_s,
                "warmup_s": plan.warmup_s,
                "load": plan.load,
            },
        }
    )


async def run_all(
    endpoints: Endpoints, plan: Plan, results: Results, args: argparse.Namespace
) -> Any:
    run = new_run(endpoints, plan, results)
    await wait_until_ready(endpoints)
    if endpoints.baseline is not None:
        await wait_until_ready(endpoints, path=BASELINE)
    if args.profile:
        return await profile_gateway(
            run, args.profile, args.profile_out, args.profile_kind, args.profile_concurrency
        )
    if not args.scenario:
        if args.idle_streams:
            await idle_streams(run, args.idle_streams)
        await benchmark(run)
    await run_extras(run, extras_wanted(args), quick=args.quick, ws_held=args.ws_held)
    return None


async def run_extras(
    run: Run, names: tuple[str, ...], *, quick: bool, ws_held: int | None = None
) -> None:
    """Each on its own Pool (seeded by the Cluster), after readiness of that Pool."""
    if not names:
        return
    foreign = ForeignLoad(run.endpoints)
    for name in names:
        if name in ON_BENCH_POOL:
            await wait_until_ready(run.endpoints)
        else:
            await wait_until_ready(run.endpoints, run.endpoints.pool(name).key)
        log(f"extra: {name}")
        if name == "websocket":
            ws_plan = QUICK_WS if quick else FULL_WS
            if ws_held is not None:
                ws_plan = replace(ws_plan, held=ws_held)
            run.results.extras[name] = await websocket_run(run, ws_plan)
        elif name == "console":
            console_plan = QUICK_CONSOLE if quick else FULL_CONSOLE
            run.results.extras[name] = await console_run(run, console_plan)
        elif name == "mcp":
            run.results.extras[name] = await mcp_run(run, QUICK_MCP if quick else FULL_MCP)
        elif name == "paced":
            run.results.extras[name] = await paced_run(run, QUICK_PACED if quick else FULL_PACED)
        elif name == "failover":
            plan = QUICK_FAILOVER if quick else FULL_FAILOVER
            run.results.extras[name] = await failover_run(run, plan)
        else:
            cache_plan = QUICK_CACHE if quick else FULL_CACHE
            run.results.extras[name] = await cache_run(run, cache_plan)
    run.results.meta["extras_other_processes_cores"] = foreign.cores()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    cores = pick_cores()
    if cores is None:
        log("fewer than 2 cores: running unpinned, figures are not comparable")
    else:
        os.sched_setaffinity(0, {cores[1]})  # the load generator shares the emulator's core
    signal.signal(signal.SIGTERM, _terminate)
    results = describe(args, plan, cores)
    started = time.monotonic()
    try:
        seeded = bool(set(extras_wanted(args)) - ON_BENCH_POOL)
        with Cluster(cores, log, extra_pools=seeded, baseline_tree=args.baseline_tree) as cluster:
            endpoints = cluster.start()
            if cluster.code:
                results.meta["code"] = cluster.code
            if "mcp" in extras_wanted(args):  # both gates open and a token, before the run
                endpoints = replace(endpoints, mcp_token=open_mcp(cluster.admin))
            profile = trio.run(run_all, endpoints, plan, results, args)
            log("stopping the processes")
    except BaseException as exc:  # Trio wraps what a nursery raises in a group
        if _contains(exc, KeyboardInterrupt):
            log("interrupted: processes stopped, temporary files removed")
            return 130
        if _contains(exc, RuntimeError):
            reasons = "; ".join(str(e) for e in _leaves(exc) if isinstance(e, RuntimeError))
            log(f"the benchmark could not run: {reasons}")
            return 2
        raise
    results.meta["duration_s"] = round(time.monotonic() - started, 1)
    results.meta["loadavg_after"] = _loadavg()
    if profile is not None:
        print(profile)
        print(f"(speedscope profile: {args.profile_out})")
    elif args.json:
        print(json.dumps(to_json(results), ensure_ascii=False))
    else:
        print(markdown(to_json(results)))
    banner = error_banner(results)
    if banner:
        print(banner, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
