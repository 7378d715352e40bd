"""Running the benchmark proper: readiness, the pacing check, warm-up, interleaved rounds,
and the medians of round medians (see bench.py for the shape of a run).

With a baseline gateway (`--baseline-tree`), `baseline` is one more path in every step:
measured like `gateway` (its own CPU, PostgreSQL, /healthz probe and loop-lag windows)
and rotated with the others, so both gateways see the same drift of the machine."""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import gateway_lag
import trio
from cluster import Endpoints, cpu_seconds, machine_busy_seconds, tree_cpu_seconds
from loadgen import Probe, RoundResult, Target, run_round
from report import Results
from scenarios import (
    BASELINE,
    GATEWAYS,
    SCENARIOS,
    Plan,
    Scenario,
    health_probe,
    paths,
    rotated,
    targets,
)
from stats import median, median_of_medians

READY_TIMEOUT_S = 30.0
FOREIGN_LOAD_WARNING = 0.1  # cores
PACED_DELAY_MS = 20
PACED_DELTAS = 3


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    endpoints: Endpoints
    plan: Plan
    results: Results
    probe: Probe
    rounds: dict[tuple[str, str, str], list[dict[str, float]]]  # (scenario, path, mode)
    rates: dict[str, list[float]]  # open-loop rate of each round, by scenario
    # A gateway's loop-lag ticks, summed over the rounds' windows: (scenario, mode) for
    # the gateway, (scenario, mode, "baseline") for the baseline (`lag_slot`); None once a
    # window could not be read (the figure is then "not measured").
    lag: dict[tuple[str, ...], gateway_lag.Buckets | None] = field(default_factory=dict)
    baseline_probe: Probe | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path a round runs: with the baseline gateway when one was started."""
        return paths(self.endpoints is not None and self.endpoints.baseline is not None)

    def probe_of(self, path: str) -> Probe | None:
        """The /healthz probe run beside a gateway's windows (none for direct and floor)."""
        return {"gateway": self.probe, BASELINE: self.baseline_probe}.get(path)

    def count_errors(self, path: str, result: RoundResult) -> None:
        self.results.errors.setdefault(path, Counter()).update(result.errors)

    def add_lag(
        self,
        key: tuple[str, ...],
        before: gateway_lag.Buckets | None,
        after: gateway_lag.Buckets | None,
    ) -> None:
        """Add one window's ticks to `lag[key]`; one unread window spoils the sum."""
        if key in self.lag and self.lag[key] is None:
            return
        ticks = gateway_lag.window(before, after)
        if ticks is None:
            who = key[2] if len(key) > 2 else "gateway"
            # An older baseline has no histogram at all: said once, not for every window.
            if who == "gateway" or not any(len(k) > 2 for k, v in self.lag.items() if v is None):
                log(f"{who} loop lag of {key[0]} ({key[1]}) not measured: /metrics unread")
            self.lag[key] = None
            return
        self.lag[key] = gateway_lag.add(self.lag.get(key), ticks)

    def cpu_pid(self, path: str) -> int | None:
        if path in GATEWAYS:
            return self.endpoints.gateway_pid_of(path)
        return self.endpoints.relay_pid if path == "floor" else None


def lag_slot(scenario_key: str, mode: str, path: str = "gateway") -> tuple[str, ...]:
    """Where `Run.lag` sums a gateway's windows (the gateway's keys are as they always were)."""
    return (scenario_key, mode) if path == "gateway" else (scenario_key, mode, path)


class _CpuMarks:
    """Process CPU read when the timed window opens and closes (sync: load-generator hooks)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.start: dict[str, float] = {}
        self.stop: dict[str, float] = {}

    def read(self, into: dict[str, float]) -> None:
        into["wall"] = time.perf_counter()
        for name, pid in self.pids.items():
            into[name] = tree_cpu_seconds([pid]) if name == "postgres" else cpu_seconds(pid)

    def used(self, name: str) -> float:
        return self.stop[name] - self.start[name]


def cpu_figures(marks: _CpuMarks, result: RoundResult, kind: str) -> dict[str, float]:
    if not result.ok or not marks.stop:
        return {}
    figures = {"emulator_cpu_us_per_request": marks.used("emulator") * 1e6 / result.ok}
    if "path" in marks.pids:
        per_request = marks.used("path") * 1e6 / result.ok
        figures["cpu_us_per_request"] = per_request
        figures["cpu_core_share"] = marks.used("path") / marks.used("wall")
        figures["rps_per_core"] = 1e6 / per_request if per_request else math.inf
        if kind == "sse":
            events = result.events / result.ok
            figures["cpu_us_per_event"] = per_request / events if events else math.nan
    if "postgres" in marks.pids:
        figures["postgres_cpu_us_per_request"] = marks.used("postgres") * 1e6 / result.ok
    return figures


async def measure(
    run: Run,
    path: str,
    target: Target,
    scenario: Scenario,
    duration_s: float,
    rate: float | None = None,
    lag_key: tuple[str, str] | None = None,
) -> dict[str, float]:
    """One run of one scenario on one path; CPU is read around the timed window only:
    the path's own process (gateway, baseline or relay), the emulator, the (baseline)
    gateway's PostgreSQL. With `lag_key` (scenario, mode), a gateway or baseline run also
    adds its loop-lag ticks to `run.lag` (one /metrics scrape before the round's
    connections open, one after its last answer)."""
    endpoints = run.endpoints
    gateway = path in GATEWAYS
    marks = _CpuMarks(
        {
            "path": run.cpu_pid(path),
            "emulator": endpoints.emulator_pid,
            "postgres": endpoints.postgres_pid_of(path) if gateway else None,
        }
    )
    port = endpoints.gateway_port_of(path) if gateway else 0
    scrape = gateway and lag_key is not None
    before = await gateway_lag.scrape(port) if scrape else None
    result = await run_round(
        target,
        scenario.concurrency,
        duration_s,
        rate=rate,
        probe=run.probe_of(path),
        on_start=lambda: marks.read(marks.start),
        on_stop=lambda: marks.read(marks.stop),
    )
    if scrape and lag_key is not None:
        run.add_lag(lag_slot(*lag_key, path), before, await gateway_lag.scrape(port))
    run.count_errors(path, result)
    figures = result.figures()
    figures.update(cpu_figures(marks, result, scenario.kind))
    await trio.sleep(run.plan.settle_s)
    return figures


async def wait_until_ready(
    endpoints: Endpoints, pool_key: str | None = None, path: str = "gateway"
) -> None:
    """The gateway (or the baseline) picks up a seeded Pool through NOTIFY: retry until it
    answers."""
    deadline = trio.current_time() + READY_TIMEOUT_S
    target = targets(endpoints, "sse", 1, pool_key=pool_key)[path]
    while True:
        result = await run_round(target, 1, 0.01)
        if result.ok:
            return
        if trio.current_time() > deadline:
            raise RuntimeError(f"the {path} never answered: {dict(result.errors)}")
        await trio.sleep(0.2)


async def pacing_check(run: Run) -> None:
    """Events paced 20 ms apart upstream must arrive one per chunk, 20 ms apart."""
    paced = targets(run.endpoints, "sse", PACED_DELTAS, delay_ms=PACED_DELAY_MS)
    report = {}
    for path in run.paths:
        result = await run_round(paced[path], 1, 0.001)
        run.count_errors(path, result)
        gaps = result.gaps_s
        report[path] = (
            f"{result.events} events in {result.chunks} chunks, "
            f"gap min {gaps.percentile(0) * 1000:.1f} ms / max {gaps.max * 1000:.1f} ms"
        )
    run.results.checks["paced stream (20 ms between upstream events)"] = report


async def warm_up(run: Run) -> None:
    """Every scenario once on every path, untimed; the gateway must work before we measure."""
    for scenario in SCENARIOS:
        paths = targets(run.endpoints, scenario.kind, scenario.deltas)
        for path in run.paths:
            figures = await measure(run, path, paths[path], scenario, run.plan.warmup_s)
            if path in GATEWAYS and not figures["requests"]:
                raise RuntimeError(f"the {path} answered nothing in the warm-up of {scenario.key}")
        log(f"warm-up {scenario.key} done")


async def one_round(run: Run, index: int) -> None:
    """Per scenario: the saturated run on every path, then the latency runs at `plan.load`
    of the slowest path's saturated throughput in this very round (the same rate on every
    path; taken from the round itself, so the load stays right as the machine drifts)."""
    plan = run.plan
    order = rotated(run.paths, index)
    for scenario in SCENARIOS:
        paths = targets(run.endpoints, scenario.kind, scenario.deltas)
        capacity = math.inf
        for path in order:
            figures = await measure(
                run,
                path,
                paths[path],
                scenario,
                plan.saturated_s,
                lag_key=(scenario.key, "saturated"),
            )
            run.rounds.setdefault((scenario.key, path, "saturated"), []).append(figures)
            if math.isfinite(figures["rps"]):
                capacity = min(capacity, figures["rps"])
        if not scenario.open_loop or not math.isfinite(capacity):
            continue
        rate = plan.load * capacity
        run.rates.setdefault(scenario.key, []).append(rate)
        for path in order:
            figures = await measure(
                run, path, paths[path], scenario, plan.latency_s, rate, (scenario.key, "latency")
            )
            figures["offered_rps"] = rate
            run.rounds.setdefault((scenario.key, path, "latency"), []).append(figures)


SATURATED_KEYS = (
    "rps",
    "postgres_cpu_us_per_request",
    "cpu_us_per_request",
    "cpu_us_per_event",
    "rps_per_core",
    "cpu_core_share",
    "emulator_cpu_us_per_request",
    "events_per_request",
)


def lag_figures(run: Run, scenario: Scenario, path: str = "gateway") -> dict[str, float]:
    """A gateway's loop lag over all rounds' windows of the mode its latency figures come
    from (the latency run above c=1), and over the saturated runs as `saturated_...`."""
    saturated = run.lag.get(lag_slot(scenario.key, "saturated", path))
    if not scenario.open_loop:
        return gateway_lag.figures(saturated)
    figures = gateway_lag.figures(run.lag.get(lag_slot(scenario.key, "latency", path)))
    figures.update(gateway_lag.figures(saturated, "saturated_"))
    return figures


def combine(run: Run) -> None:
    """Medians of round medians; latency figures from the latency run above c=1."""
    for scenario in SCENARIOS:
        sides: dict[str, dict[str, float]] = {}
        for path in run.paths:
            saturated = median_of_medians(run.rounds.get((scenario.key, path, "saturated"), []))
            side = dict(saturated)
            if scenario.open_loop:
                latency = median_of_medians(run.rounds.get((scenario.key, path, "latency"), []))
                side = dict(latency)
                side.update({k: saturated[k] for k in SATURATED_KEYS if k in saturated})
                for key in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "gap_p99_ms"):
                    side[f"saturated_{key}"] = saturated.get(key, math.nan)
                side["load_core_share"] = latency.get("cpu_core_share", math.nan)
                side["achieved_rps"] = latency.get("rps", math.nan)
            side["errors"] = int(
                sum(
                    f.get("errors", 0.0)
                    for mode in ("saturated", "latency")
                    for f in run.rounds.get((scenario.key, path, mode), [])
                )
            )
            if path in GATEWAYS:
                side.update(lag_figures(run, scenario, path))
            sides[path] = side
        run.results.scenarios[scenario.key] = sides
        if scenario.open_loop:
            rate = median(run.rates.get(scenario.key, []))
            run.results.loads[scenario.key] = (
                f"open loop at {rate:.0f} req/s (median over rounds; {run.plan.load:.0%} of "
                f"the slowest path's saturated throughput in the same round) over up to "
                f"{scenario.concurrency} connections"
            )
        else:
            run.results.loads[scenario.key] = "closed loop, one request at a time"


def new_run(endpoints: Endpoints, plan: Plan, results: Results) -> Run:
    run = Run(endpoints, plan, results, health_probe(endpoints), {}, {})
    if endpoints.baseline is not None:
        run.baseline_probe = health_probe(endpoints, BASELINE)
    return run


class ForeignLoad:
    """How much CPU other processes on the machine used while we measured: this machine
    is shared, and a test suite running beside the benchmark skews every figure."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.pids = endpoints.our_pids()
        self.wall = time.perf_counter()
        self.machine = machine_busy_seconds()
        self.ours = tree_cpu_seconds(self.pids)

    def cores(self) -> float:
        """Average number of cores used by others since construction."""
        machine = machine_busy_seconds() - self.machine
        ours = tree_cpu_seconds(self.pids) - self.ours
        return max(0.0, machine - ours) / (time.perf_counter() - self.wall)


async def benchmark(run: Run) -> None:
    plan = run.plan
    foreign = ForeignLoad(run.endpoints)
    await pacing_check(run)
    await warm_up(run)
    for index in range(plan.rounds):
        started = time.monotonic()
        await one_round(run, index)
        busy = foreign.cores()
        log(
            f"round {index + 1}/{plan.rounds} done in {time.monotonic() - started:.0f} s "
            f"(other processes so far: {busy:.2f} cores)"
        )
    combine(run)
    busy = foreign.cores()
    run.results.meta["other_processes_cores"] = busy
    if busy > FOREIGN_LOAD_WARNING:
        warning = (
            f"other processes used {busy:.2f} cores on average during the run: "
            "the figures are skewed, run again on a quiet machine"
        )
        run.results.meta["warning"] = warning
        log(f"WARNING: {warning}")
