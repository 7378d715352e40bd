"""Two optional runs beside the scenarios: idle streams (memory per held SSE stream and
whether opening one slows down as more are held; through the baseline gateway too when
one runs) and a py-spy profile of the gateway under load."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path

import trio
from cluster import cpu_seconds, rss_bytes
from held_streams import HeldStreams, hold_streams
from loadgen import run_round
from profile_summary import render, summarize
from runner import Run, log
from scenarios import GATEWAYS, SHORT_DELTAS, SSE_DELTAS, targets
from stats import median

IDLE_DELAY_MS = 600_000  # the emulator waits this long before each event: the stream idles
SETTLE_S = 1.0
# py-spy pauses the gateway for each sample (without --nonblocking, stacks are consistent:
# with it, a sample taken mid-syscall often loses the coroutine chain above the socket).
PROFILE_RATE_HZ = 100


async def idle_streams(run: Run, count: int) -> None:
    """Hold `count` idle SSE streams through the gateway (and then, if it runs, through
    the baseline gateway: one at a time): RSS growth per stream, and the time to open a
    stream (to its response head) alone, with few and with many held."""
    for path in run.paths:
        if path in GATEWAYS:
            await _idle_streams(run, path, count)


def idle_check_name(path: str) -> str:
    """The `checks` entry of one gateway's idle streams (the gateway's name as always)."""
    return f"idle SSE streams held through the {path}"


async def _idle_streams(run: Run, path: str, count: int) -> None:
    target = targets(run.endpoints, "sse", 1, delay_ms=IDLE_DELAY_MS)[path]
    pid = run.endpoints.gateway_pid_of(path)
    await trio.sleep(SETTLE_S)
    before = rss_bytes(pid)
    held = HeldStreams()
    async with trio.open_nursery() as nursery:
        await nursery.start(hold_streams, target, count, held)
        await trio.sleep(SETTLE_S)
        after = rss_bytes(pid)
        nursery.cancel_scope.cancel()
    opened, solo = len(held.open_s), held.solo_open_s
    figures: dict[str, object] = {
        "asked": count,
        "opened": opened,
        "failed": dict(held.errors),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_held_mib": round(after / 2**20, 1),
        "kib_per_stream": round((after - before) / 1024 / opened, 1) if opened else None,
        "open_ms_p50_all": round(median(held.open_s) * 1000, 2),
        "open_ms_alone_first": round(solo[0] * 1000, 2) if solo else None,
        "open_ms_alone_last": round(solo[-1] * 1000, 2) if solo else None,
    }
    run.results.checks[idle_check_name(path)] = figures
    if opened:
        memory = {"kib_per_stream": (after - before) / 1024 / opened, "streams": float(opened)}
        run.results.scenarios.setdefault("idle streams", {})[path] = memory
    failed = {f"idle_{kind}": n for kind, n in held.errors.items()}
    run.results.errors.setdefault(path, Counter()).update(failed)
    log(f"idle streams{'' if path == 'gateway' else f' ({path})'}: {figures}")
    await trio.sleep(SETTLE_S)  # let the gateway close the upstream side


async def _spy(argv: list[str]) -> None:
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"py-spy failed: {done.stderr.decode(errors='replace')[-1500:]}")


async def profile_gateway(run: Run, seconds: float, out: Path, kind: str, concurrency: int) -> str:
    """Closed-loop load on the gateway while py-spy samples it; the text summary."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    deltas = SSE_DELTAS if kind == "sse" else SHORT_DELTAS
    target = targets(run.endpoints, kind, deltas)["gateway"]
    await run_round(target, concurrency, 2.0)  # warm up
    pid = run.endpoints.gateway_pid
    argv = [
        *(spy, "record", "--pid", str(pid), "--duration", str(round(seconds))),
        *("--rate", str(PROFILE_RATE_HZ), "--format", "speedscope", "--output", str(out)),
    ]
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_spy, argv)
        result = await run_round(target, concurrency, seconds + 1.0)
    cpu = cpu_seconds(pid) - cpu_before
    wall = time.perf_counter() - wall_before
    run.count_errors("gateway", result)
    figures = result.figures()
    per_request = cpu * 1e6 / result.ok if result.ok else math.nan
    head = (
        f"gateway under {kind} c={concurrency} ({deltas} deltas), closed loop, {seconds:.0f} s "
        f"of py-spy at {PROFILE_RATE_HZ} Hz: {figures['rps']:.0f} requests/s, "
        f"p50 {figures['p50_ms']:.1f} ms, CPU {100 * cpu / wall:.0f} % of a core, "
        f"{per_request:.0f} µs CPU per request "
        f"({per_request / max(1.0, figures['events_per_request']):.0f} µs per client event), "
        f"errors {sum(result.errors.values())}"
    )
    profile = json.loads(await trio.Path(out).read_text())
    return head + "\n" + render(summarize(profile), top=25)
