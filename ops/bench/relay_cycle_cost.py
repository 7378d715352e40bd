"""The gateway's fixed cost of one relay cycle of an SSE answer, with many streams in flight.

One cycle: the upstream socket readable, the relay's task woken, one recv(2), httptools'
parse, the stream's accounting, one write to the client, the wait for the next read. What
a cycle costs is what matters when the gateway is not saturated: it then reads the
upstream more often, with fewer events each (issue 17, "sse c=200").

The gateway runs in THIS process (as `loop_turns.py` runs it); the emulator and the load
generator are child processes, PostgreSQL the embedded server in a temporary directory.
The load is closed-loop at `--concurrency` streams of the bench's SSE request
(`scenarios.request_body`) with the emulator pausing `--delay-ms` before each event, so
most upstream reads bring one event and each read is one cycle. Each window runs twice,
with `--deltas` A and B text deltas (A + 8 and B + 8 events a stream): the difference of
the gateway's CPU per stream between them, over the difference in events, is the CPU of
one more relayed event, without the stream's fixed part (its request, lease, log row).

Per window, in the gateway process: CPU per stream (`time.process_time`), upstream reads
and client writes per event (wrappers around `UpstreamResponse._received` and
`write_stall.send_now`), task steps and loop turns per read (a trio Instrument); with
`--profile`, cProfile's Python calls per read (coroutine resumptions count as calls); with
`--strace`, `strace -c` on the main thread (system calls per read: recvfrom, sendto and
epoll_ctl are the cycle's own). Both slow the gateway down: use their counts, not the CPU
figures of the same run.

    python ops/bench/relay_cycle_cost.py [--concurrency 200] [--delay-ms 40]
        [--deltas 4,44] [--seconds 6] [--rounds 3] [--profile] [--strace]

Run from the repository root with PYTHONPATH=$PWD (and a `pooler` console script on
PATH). To compare two trees, run it on each in alternation, e.g. this file with
PYTHONPATH=<the other tree> (the medians move with the machine's load; the counts do not).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SETTLE_S = 1.0


async def client_main(port: int, key: str, args: list[str]) -> None:
    """One window of closed-loop SSE load; prints its figures as one JSON line."""
    from loadgen import Target, run_round
    from scenarios import ROUTE, SSE_DONE, request_body

    concurrency, seconds, delay_ms, deltas = (
        int(args[0]),
        float(args[1]),
        int(args[2]),
        int(args[3]),
    )
    headers = (
        (b"authorization", b"Bearer " + key.encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
    )
    body = request_body(deltas, stream=True, delay_ms=delay_ms or None)
    target = Target("127.0.0.1", port, b"POST", ROUTE, headers, body, SSE_DONE)
    result = await run_round(target, concurrency, seconds)
    print(json.dumps({"streams": result.ok, "errors": dict(result.errors)}), flush=True)


class Steps(trio.abc.Instrument):
    """Task steps and loop turns while `on`."""

    def __init__(self) -> None:
        self.steps = self.turns = 0
        self.on = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.steps += 1

    def after_io_wait(self, timeout: float) -> None:
        if self.on:
            self.turns += 1


def count_io() -> dict[str, int]:
    """Count upstream reads and client sends (wrappers around the gateway's functions: the
    parse of each upstream read, each first non-blocking send(2) of a server write)."""
    from pooler import write_stall
    from pooler.upstream.http1 import UpstreamResponse

    counts = {"reads": 0, "writes": 0}
    received = UpstreamResponse._received
    send_now = write_stall.send_now

    def _received(self: Any, data: Any) -> None:
        counts["reads"] += 1
        received(self, data)

    def _send_now(sock: Any, data: Any) -> int:
        counts["writes"] += 1
        return send_now(sock, data)

    UpstreamResponse._received = _received  # type: ignore[method-assign]
    write_stall.send_now = _send_now
    return counts


async def window(
    args: argparse.Namespace, port: int, key: str, deltas: int, io: dict[str, int], steps: Steps
) -> dict[str, float]:
    argv = [sys.executable, __file__, "--client", str(port), key]
    argv += [str(args.concurrency), str(args.seconds), str(args.delay_ms), str(deltas)]
    io["reads"] = io["writes"] = 0
    steps.steps = steps.turns = 0
    strace = None
    if args.strace:
        out = Path(tempfile.gettempdir()) / f"relay_cycle_strace_{os.getpid()}.txt"
        strace = await trio.lowlevel.open_process(
            ["strace", "-c", "-p", str(os.getpid()), "-o", str(out)], stderr=subprocess.DEVNULL
        )
        await trio.sleep(0.5)
    profile = cProfile.Profile() if args.profile else None
    steps.on = True
    if profile is not None:
        profile.enable()
    cpu0 = time.process_time()
    done = await trio.run_process(argv, capture_stdout=True, check=False)
    cpu = time.process_time() - cpu0
    if profile is not None:
        profile.disable()
    steps.on = False
    if strace is not None:
        strace.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await strace.wait()
    try:
        load = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"the load generator failed: {done.stdout!r}") from None
    streams = load["streams"]
    events = streams * (deltas + 8)
    reads = max(io["reads"], 1)
    row = {
        "deltas": deltas,
        "streams": streams,
        "errors": sum(load["errors"].values()),
        "cpu_us_stream": cpu / max(streams, 1) * 1e6,
        "cpu_us_read": cpu / reads * 1e6,
        "reads_per_event": io["reads"] / max(events, 1),
        "writes_per_event": io["writes"] / max(events, 1),
        "steps_per_read": steps.steps / reads,
        "turns_per_read": steps.turns / reads,
    }
    if profile is not None:
        stats = pstats.Stats(profile)
        row["python_calls_per_read"] = sum(v[1] for v in stats.stats.values()) / reads  # type: ignore[attr-defined]
    if strace is not None:
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("recvfrom", "sendto", "epoll_ctl", "epoll_wait"):
                row[f"{parts[-1]}_per_read"] = int(parts[3]) / reads
    return row


async def main(args: argparse.Namespace) -> None:
    from idle_memory import gateway_parts, start_emulator, stop_gateway_parts

    from pooler.server import run_gateway

    deltas = [int(d) for d in args.deltas.split(",")]
    io = count_io()
    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    root = Path(tempfile.mkdtemp(prefix="pooler-relay-cycle-"))
    os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own user when root
    emulator = database = None
    rows: list[dict[str, float]] = []
    try:
        emulator, port, auth_files = start_emulator(root)
        config, database, key = await gateway_parts(root, port, auth_files)
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_gateway, config, database, "127.0.0.1", 0)
            await trio.sleep(SETTLE_S)
            for index in range(args.rounds):
                for count in deltas:
                    row = await window(args, running.port, key, count, io, steps)
                    rows.append(row)
                    print(f"round {index + 1}: {json.dumps(row)}", flush=True)
                    await trio.sleep(SETTLE_S)
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(steps)
        stop_gateway_parts(emulator, database, root)
    print("\nmedians over rounds:")
    for count in deltas:
        mine = [r for r in rows if r["deltas"] == count]
        figures = {k: round(median(r[k] for r in mine), 3) for k in mine[0] if k != "deltas"}
        print(f"  {count} deltas: {json.dumps(figures)}")
    if len(deltas) >= 2:
        low, high = deltas[0], deltas[-1]
        by_round = zip(
            [r for r in rows if r["deltas"] == low],
            [r for r in rows if r["deltas"] == high],
            strict=True,
        )
        marginal = [(b["cpu_us_stream"] - a["cpu_us_stream"]) / (high - low) for a, b in by_round]
        print(
            f"  CPU of one more relayed event: {median(marginal):.1f} µs"
            f" (per round: {', '.join(f'{m:.1f}' for m in marginal)})"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=40, help="the emulator's pause per event")
    parser.add_argument("--deltas", default="4,44", help="text deltas a stream, per window")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile's calls per read")
    parser.add_argument("--strace", action="store_true", help="strace -c on the main thread")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        trio.run(client_main, int(sys.argv[2]), sys.argv[3], sys.argv[4:])
    else:
        trio.run(main, parse_args(sys.argv[1:]))
