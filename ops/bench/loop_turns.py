"""What the gateway's longest event-loop turns are, under SSE load (issue 17).

The gateway runs in THIS process (so the script sees its loop and its garbage collector);
the emulator and the load generator are child processes, PostgreSQL is the embedded
server in a temporary directory (as `idle_memory.py` sets it up). The load is the bench's
SSE request (20 deltas, 28 events) at `--rate` streams/s open loop over `--concurrency`
connections (`loadgen.run_round`), in `--rounds` windows of `--seconds` each.

Per window, in the gateway process:

- loop lag: the gateway's own histogram (`codex_pooler_event_loop_tick_lag_seconds`, how
  late each 50 ms sleep wakes), the window's difference, read as the bench reads it
  (`gateway_lag.py`); and the exact p50/p99/max of the window's ticks;
- loop turns: a trio instrument times each turn of the run loop (from the end of one wait
  for I/O to the start of the next: every task step run in between), in wall time and in
  the loop thread's CPU time, how much of it was a garbage collection (`gc.callbacks`),
  and how much CPU the process's other threads (the database's) used meanwhile; turns
  over 5 ms of wall time are counted by cause (mostly GC, waiting for the GIL,
  descheduled) and the longest in CPU listed (with `--steps`: their longest task steps);
- GC: collections and pause p50/p99/max per generation, and CPU per stream (process time).

Modes (`--modes`, alternated round by round, in the same process): `default` is
CPython's collector as it comes (nothing frozen, thresholds 700/10/10); `tuned` is
`pooler.gc_tuning` (start-up frozen, young threshold raised); `young<N>` (`young700`)
freezes too and sets the young generation's threshold to N (the alternatives);
`switch<N>` is `tuned` with the interpreter's GIL switch interval at N µs (CPython's:
5,000), for the turns that wait for the GIL while a database thread runs Python. The
gateway itself settles the collector once it has started (pooler.server), so `default`
undoes that (`gc.unfreeze`, thresholds 700/10/10) before its window and `tuned` redoes it.

`--cores A,B` pins as bench.py does: this process (the gateway) and the embedded
PostgreSQL on core A, the emulator and the load generator on core B; without it nothing is
pinned (PostgreSQL then runs beside the gateway, not on its core).

    python ops/bench/loop_turns.py [--rate 150] [--concurrency 50] [--seconds 20]
        [--rounds 4] [--modes default,tuned] [--steps] [--cores 0,1]

Run from the repository root with PYTHONPATH=$PWD (and a `pooler` console script on
PATH). It needs no other service; everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LONG_TURN_S = 0.005
SETTLE_S = 1.0
CPYTHON_THRESHOLDS = (700, 10, 10)


# --- the load (a child process) ------------------------------------------------------------


async def client_main(port: int, key: str, rate: float, concurrency: int, seconds: float) -> None:
    """One window of SSE load; prints the round's figures as one JSON line."""
    from loadgen import Target, run_round
    from scenarios import ROUTE, SSE_DELTAS, SSE_DONE, request_body

    headers = (
        (b"authorization", b"Bearer " + key.encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
    )
    body = request_body(SSE_DELTAS, stream=True)
    target = Target("127.0.0.1", port, b"POST", ROUTE, headers, body, SSE_DONE)
    result = await run_round(target, concurrency, seconds, rate=rate if rate > 0 else None)
    figures = result.figures()
    figures["error_kinds"] = dict(result.errors)  # type: ignore[assignment]
    print(json.dumps(figures), flush=True)


# --- what the gateway's process sees -----------------------------------------------------


@dataclass
class Window:
    turns_s: list[float] = field(default_factory=list)
    turns_cpu_s: list[float] = field(default_factory=list)
    # (wall s, this thread's CPU s, other threads' CPU s, gc s, what ran)
    long_turns: list[tuple[float, float, float, float, str]] = field(default_factory=list)
    gc_pauses: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    gc_cpu: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    gc_collected: Counter[int] = field(default_factory=Counter)


class TurnRecorder(trio.abc.Instrument):
    """Times each run-loop turn and each collection; with `steps`, the tasks of a turn."""

    def __init__(self, steps: bool) -> None:
        self.window: Window | None = None
        self.turn_start = 0.0
        self.turn_cpu = self.turn_process = 0.0
        self.turn_gc_s = 0.0
        self.gc_start = self.gc_cpu_start = 0.0
        self.steps = steps
        self.step_start = 0.0
        self.turn_tasks: list[tuple[float, str]] = []
        gc.callbacks.append(self.on_gc)

    def close(self) -> None:
        gc.callbacks.remove(self.on_gc)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if phase == "start":
            self.gc_start, self.gc_cpu_start = now, cpu
            return
        pause = now - self.gc_start
        self.turn_gc_s += pause
        if self.window is not None:
            self.window.gc_pauses[info["generation"]].append(pause)
            self.window.gc_cpu[info["generation"]].append(cpu - self.gc_cpu_start)
            self.window.gc_collected[info["generation"]] += info["collected"]

    def after_io_wait(self, timeout: float) -> None:
        self.turn_start = time.perf_counter()
        self.turn_cpu = time.thread_time()
        self.turn_process = time.process_time()
        self.turn_gc_s = 0.0
        self.turn_tasks.clear()

    def before_io_wait(self, timeout: float) -> None:
        if self.window is None or not self.turn_start:
            return
        turn = time.perf_counter() - self.turn_start
        cpu = time.thread_time() - self.turn_cpu
        others = time.process_time() - self.turn_process - cpu
        self.window.turns_s.append(turn)
        self.window.turns_cpu_s.append(cpu)
        if turn >= LONG_TURN_S:
            tasks = sorted(self.turn_tasks, reverse=True)[:3]
            what = f"{len(self.turn_tasks)} steps; " if self.steps else ""
            what += ", ".join(f"{name} {s * 1000:.1f}" for s, name in tasks)
            self.window.long_turns.append((turn, cpu, others, self.turn_gc_s, what))

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.steps:
            self.step_start = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.steps:
            self.turn_tasks.append((time.perf_counter() - self.step_start, task.name))


CPYTHON_SWITCH_INTERVAL_S = 0.005


def set_mode(mode: str) -> None:
    from pooler import gc_tuning

    gc.unfreeze()
    gc.set_threshold(*CPYTHON_THRESHOLDS)
    sys.setswitchinterval(CPYTHON_SWITCH_INTERVAL_S)
    if mode.startswith("switch") and mode[6:].isdigit():
        sys.setswitchinterval(int(mode[6:]) / 1e6)
        mode = "tuned"
    if mode == "tuned":
        gc_tuning.freeze_what_lives()  # as the gateway does once it has started
        gc.set_threshold(gc_tuning.YOUNG_THRESHOLD, *CPYTHON_THRESHOLDS[1:])
    elif mode.startswith("young") and mode[5:].isdigit():
        gc_tuning.freeze_what_lives()
        gc.set_threshold(int(mode[5:]), *CPYTHON_THRESHOLDS[1:])
    elif mode != "default":
        raise SystemExit(f"unknown mode {mode!r}")
    gc.collect()


def tracked_objects() -> dict[str, int]:
    young, middle, old = (len(gc.get_objects(g)) for g in range(3))
    return {"gen0": young, "gen1": middle, "gen2": old, "frozen": gc.get_freeze_count()}


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def window_figures(
    window: Window, ticks: list[float], lag: Any, seconds: float, cpu_s: float, streams: float
) -> dict[str, Any]:
    import gateway_lag

    out: dict[str, Any] = {
        "hist_lag_p50_ms": gateway_lag.quantile(lag, 0.5) * 1000,
        "hist_lag_p99_ms": gateway_lag.quantile(lag, 0.99) * 1000,
        "tick_lag_p50_ms": quantile(ticks, 0.5) * 1000,
        "tick_lag_p99_ms": quantile(ticks, 0.99) * 1000,
        "tick_lag_max_ms": max(ticks, default=math.nan) * 1000,
        "ticks": len(ticks),
        "turns": len(window.turns_s),
        "turn_p99_ms": quantile(window.turns_s, 0.99) * 1000,
        "turn_p999_ms": quantile(window.turns_s, 0.999) * 1000,
        "turn_max_ms": max(window.turns_s, default=math.nan) * 1000,
        "long_turns": len(window.long_turns),
        "turn_cpu_p99_ms": quantile(window.turns_cpu_s, 0.99) * 1000,
        "turn_cpu_max_ms": max(window.turns_cpu_s, default=math.nan) * 1000,
        "long_turns_with_gc": sum(1 for *_, g, _ in window.long_turns if g > 0),
        "long_turns_mostly_gc": sum(1 for t, *_, g, _ in window.long_turns if g >= t / 2),
        # A turn whose thread ran for less than half its wall time was mostly waiting:
        # for the GIL while our other threads (the database's) ran, or descheduled by the
        # machine (other processes).
        "long_turns_waiting_gil": sum(
            1 for t, c, o, _, _ in window.long_turns if c < t / 2 and o >= t / 4
        ),
        "long_turns_descheduled": sum(
            1 for t, c, o, _, _ in window.long_turns if c < t / 2 and o < t / 4
        ),
        "cpu_us_per_stream": cpu_s / streams * 1e6 if streams else math.nan,
    }
    out["gc_cpu_ms_per_s"] = sum(sum(cpu) for cpu in window.gc_cpu.values()) / seconds * 1000
    for generation in range(3):
        pauses = window.gc_pauses.get(generation, [])
        out[f"gc{generation}_per_s"] = len(pauses) / seconds
        out[f"gc{generation}_p50_ms"] = quantile(pauses, 0.5) * 1000
        out[f"gc{generation}_p99_ms"] = quantile(pauses, 0.99) * 1000
        out[f"gc{generation}_max_ms"] = max(pauses, default=math.nan) * 1000
        out[f"gc{generation}_cpu_p99_ms"] = quantile(window.gc_cpu.get(generation, []), 0.99) * 1000
    return out


async def main(args: argparse.Namespace) -> None:
    import gateway_lag
    from idle_memory import gateway_parts, start_emulator, stop_gateway_parts
    from ttfb_phases import pin, postgres_pids

    from pooler.db import Database
    from pooler.server import run_gateway

    modes = args.modes.split(",")
    root = Path(tempfile.mkdtemp(prefix="pooler-turns-"))
    os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own user when root
    emulator: subprocess.Popen[bytes] | None = None
    database: Database | None = None
    recorder = TurnRecorder(args.steps)
    trio.lowlevel.add_instrument(recorder)
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        emulator, port, auth_files = start_emulator(root)
        config, database, key = await gateway_parts(root, port, auth_files)
        cores = [int(c) for c in args.cores.split(",")] if args.cores else []
        if cores:
            os.sched_setaffinity(0, {cores[0]})
            pin([emulator.pid], cores[1])
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_gateway, config, database, "127.0.0.1", 0)
            if cores:
                pin(postgres_pids(root / "data"), cores[0])
            await trio.sleep(SETTLE_S)
            print(f"tracked objects after start-up: {tracked_objects()}", flush=True)
            monitor = running.gateway.loop_lag
            argv = [sys.executable, __file__, "--client", str(running.port), key]
            argv += [str(args.rate), str(args.concurrency), str(args.seconds)]
            if cores:
                argv = ["taskset", "-c", str(cores[1]), *argv]
            for index in range(args.rounds * len(modes)):
                mode = modes[index % len(modes)]
                set_mode(mode)
                await trio.sleep(SETTLE_S)
                window = Window()
                before = monitor.histogram().cumulative()
                cpu0 = time.process_time()
                recorder.window = window
                done = await trio.run_process(argv, capture_stdout=True, check=False)
                recorder.window = None
                cpu = time.process_time() - cpu0
                after = monitor.histogram().cumulative()
                lag = gateway_lag.window(
                    {b: float(c) for b, c in before}, {b: float(c) for b, c in after}
                )
                samples = list(monitor.samples)
                count = min(len(samples), gateway_lag.ticks(lag))
                ticks = samples[len(samples) - count :] if count else []
                try:
                    load = json.loads(done.stdout.decode().strip().splitlines()[-1])
                except (IndexError, ValueError):
                    raise SystemExit(f"the load generator failed: {done.stdout!r}") from None
                figures = window_figures(
                    window, ticks, lag, args.seconds, cpu, float(load["requests"])
                )
                figures["streams_per_s"] = load["rps"]
                figures["errors"] = load["errors"]
                results[mode].append(figures)
                print(f"\nround {index + 1} ({mode}): {json.dumps(figures)}", flush=True)
                # The longest in CPU: on a busy machine the longest in wall time are mostly
                # turns during which the process was descheduled.
                by_cpu = sorted(window.long_turns, key=lambda turn: turn[1], reverse=True)
                for turn, cpu_s, others_s, gc_s, what in by_cpu[: args.top]:
                    print(
                        f"  turn {turn * 1000:6.1f} ms, CPU {cpu_s * 1000:6.1f} ms, other threads"
                        f" {others_s * 1000:6.1f} ms,"
                        f" gc {gc_s * 1000:5.1f} ms  {what}"
                    )
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(recorder)
        recorder.close()
        stop_gateway_parts(emulator, database, root)
    print("\nmedians over rounds:")
    keys = list(next(iter(results.values()))[0]) if results else []
    print(f"  {'figure':24}" + "".join(f"{mode:>12}" for mode in modes))
    for name in keys:
        row = [median(float(r[name]) for r in results[mode]) for mode in modes]
        print(f"  {name:24}" + "".join(f"{v:12.3f}" for v in row))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="streams/s (0: closed loop)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2, help="windows per mode")
    parser.add_argument("--modes", default="default,tuned")
    parser.add_argument("--top", type=int, default=8, help="longest turns listed per window")
    parser.add_argument("--steps", action="store_true", help="time every task step too")
    parser.add_argument("--cores", help="A,B: the gateway and PostgreSQL on A, the load on B")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, key, rate, concurrency, seconds = sys.argv[2:7]
        trio.run(client_main, int(port), key, float(rate), int(concurrency), float(seconds))
    else:
        trio.run(main, parse_args(sys.argv[1:]))
