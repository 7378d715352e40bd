"""The failover run: the `failover` Pool of 3 emulator accounts, one of which answers every
request with a 500 (`server_error_500`) from start to end, beside the healthy `bench`
Pool of 3 accounts as the reference.

Each round runs the same open-loop load of short streamed requests (no continuity key,
so every request is routed afresh) once through each Pool, in alternating order; the
figures are medians of round medians, and the latency the failing account adds is the
faulted Pool's minus the healthy Pool's, from the same rounds. The emulator's request
log (reset when the fault is armed) tells how many upstream attempts still went to the
failing account, per round and over the first seconds: a gateway that learns stops
sending there within the first buckets (a circuit breaker may still probe it later).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from emulator_api import EmulatorControl
from extra_stats import LogEntry, ratio, responses_attempts, timeline
from loadgen import Target, run_round
from runner import Run, log
from scenarios import SHORT_DELTAS, targets
from stats import median_of_medians

FAULT = "server_error_500"
FAULT_TIMES = 1_000_000  # "for the whole run"
ERRORS_PATH = "gateway (failover)"
LATENCY_KEYS = ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms")
PHASES = ("healthy", "faulted")


@dataclass(frozen=True)
class FailoverPlan:
    rounds: int
    seconds: float  # per phase and round
    rate: float  # requests/s, open loop, in both phases
    concurrency: int  # connections at most
    warmup_s: float
    bucket_s: float  # timeline resolution, over the first phase with the fault


QUICK_FAILOVER = FailoverPlan(
    rounds=3, seconds=2.0, rate=100.0, concurrency=20, warmup_s=0.5, bucket_s=0.25
)
FULL_FAILOVER = FailoverPlan(
    rounds=5, seconds=5.0, rate=100.0, concurrency=20, warmup_s=2.0, bucket_s=0.5
)


@dataclass
class _Phases:
    figures: dict[str, list[dict[str, float]]]
    spans: dict[str, list[tuple[float, float]]]  # wall-clock (start, end) per round
    errors: Counter[str]


async def _rounds(run: Run, plan: FailoverPlan, phases: dict[str, Target]) -> _Phases:
    done = _Phases({name: [] for name in PHASES}, {name: [] for name in PHASES}, Counter())
    for index in range(plan.rounds):
        for name in PHASES if index % 2 == 0 else PHASES[::-1]:
            started = time.time()
            result = await run_round(phases[name], plan.concurrency, plan.seconds, rate=plan.rate)
            done.spans[name].append((started, time.time()))
            done.figures[name].append(result.figures())
            if name == "faulted":
                done.errors.update(result.errors)
            run.results.errors.setdefault(ERRORS_PATH, Counter()).update(result.errors)
    return done


def _within(entries: list[LogEntry], span: tuple[float, float]) -> list[LogEntry]:
    return [e for e in entries if span[0] <= float(e["time"]) <= span[1]]


def phase_summary(rounds: list[dict[str, float]], attempts: int) -> dict[str, Any]:
    figures = median_of_medians(rounds)
    ok = sum(r.get("requests", 0.0) for r in rounds)
    errors = sum(r.get("errors", 0.0) for r in rounds)
    summary: dict[str, Any] = {key: figures.get(key, math.nan) for key in LATENCY_KEYS}
    summary.update(
        requests=int(ok),
        errors=int(errors),
        success_rate=ratio(ok, ok + errors),
        upstream_attempts=attempts,
        attempts_per_request=ratio(attempts, ok + errors),
    )
    return summary


async def failover_run(run: Run, plan: FailoverPlan) -> dict[str, Any]:
    endpoints = run.endpoints
    pool = endpoints.pool("failover")
    faulted_id = pool.account_ids[0]
    control = EmulatorControl(endpoints.emulator_port)
    phases = {
        "healthy": targets(endpoints, "short_stream", SHORT_DELTAS)["gateway"],
        "faulted": targets(endpoints, "short_stream", SHORT_DELTAS, pool_key=pool.key)["gateway"],
    }
    await control.reset()
    for target in phases.values():  # every account of both Pools connected
        warm = await run_round(target, plan.concurrency, plan.warmup_s)
        run.results.errors.setdefault(ERRORS_PATH, Counter()).update(warm.errors)
    await control.reset()
    await control.arm(faulted_id, FAULT, FAULT_TIMES)
    armed = time.time()
    done = await _rounds(run, plan, phases)
    entries = responses_attempts(await control.requests())
    await control.reset()  # the fault goes, for whatever runs next

    in_pool = [e for e in entries if e.get("account_id") in pool.account_ids]
    on_account = [e for e in in_pool if e.get("account_id") == faulted_id]
    healthy = phase_summary(done.figures["healthy"], len(entries) - len(in_pool))
    faulted = phase_summary(done.figures["faulted"], len(in_pool))
    first = done.spans["faulted"][0]
    first_round = _within(on_account, first)
    faulted.update(
        errors_by_kind=dict(done.errors),
        attempts_on_account=len(on_account),
        share_on_account=ratio(len(on_account), len(in_pool)),
        attempts_on_account_by_round=[len(_within(on_account, s)) for s in done.spans["faulted"]],
        timeline_first_round=timeline(
            first_round, faulted_id, first[0], plan.seconds, plan.bucket_s
        ),
        last_attempt_on_account_s=max((float(e["time"]) - armed for e in on_account), default=None),
    )
    report: dict[str, Any] = {
        "pool_accounts": len(pool.account_ids),
        "fault": FAULT,
        "load": f"{plan.rounds} rounds x {plan.seconds:.0f} s per Pool, open loop at "
        f"{plan.rate:.0f} req/s over up to {plan.concurrency} connections, short streamed "
        "requests; healthy = the `bench` Pool (3 accounts)",
        "bucket_s": plan.bucket_s,
        "healthy": healthy,
        "faulted": faulted,
        "added_vs_healthy": {key: faulted[key] - healthy[key] for key in LATENCY_KEYS},
    }
    added = report["added_vs_healthy"]
    log(
        f"failover: success {faulted['success_rate']:.1%}, {len(on_account)}/{len(in_pool)} "
        f"attempts on the failing account (by round {faulted['attempts_on_account_by_round']}), "
        f"p50 {added['p50_ms']:+.2f} ms, p99 {added['p99_ms']:+.2f} ms vs healthy"
    )
    return report
