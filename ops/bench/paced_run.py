"""The paced extra (issue 17): a client that does not stream, behind a slow upstream stream.

Every upstream answer is paced (`x-emulator-delay-ms` before each of its events, about
2.6 s a request). The same request goes four ways at once, 50 connections in all: streamed
directly to the emulator (the reference), streamed through the gateway's Codex route, and
not streamed through the gateway, on the Codex route and on `/v1/responses` (the gateway
collects the upstream stream and answers one JSON body; `/v1`
chat takes the same path, but its body cannot carry the emulator's pacing knob). A request
is done at its last byte. What the gateway adds is its path's p50/p99 minus the direct
path's, from the same rounds, and each non-streamed path's minus the gateway's streamed one
(the issue's target: within ~2 ms at 50 concurrent). Sharing one window matters more than
the load: a paced request's duration moves by tens of milliseconds between windows (timer
jitter, the emulator's load), far more than the difference sought.

So each answer's *tail* is timed too: the emulator stamps its terminal event with the
moment it sent it (`x-emulator-sent-at`, CLOCK_MONOTONIC, the same clock here), and the
tail runs from there to the answer's last byte. The pacing's jitter is all before that
stamp; what a path does after the upstream's last event (relay it, or collect the stream
and write one JSON body) is all after it. Three runs of the duration-based figure on one
quiet machine read +8.8, -6.6 and -7.4 ms for the same code: its noise is ~10 ms, five
times the target, which the tails resolve.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio
from loadgen import Target, run_round
from runner import Run, log
from scenarios import JSON_DONE, SSE_DELTAS, request_body, targets
from stats import median_of_medians

PATHS = ("direct", "gateway stream", "gateway json", "gateway v1 json")
ERRORS_PATH = "gateway (paced)"


@dataclass(frozen=True)
class PacedPlan:
    rounds: int
    seconds: float  # closed loop per path and round (requests started until then finish)
    concurrency: int
    delay_ms: int  # before each upstream event


QUICK_PACED = PacedPlan(rounds=3, seconds=6.0, concurrency=50, delay_ms=100)
FULL_PACED = PacedPlan(rounds=5, seconds=12.0, concurrency=50, delay_ms=100)


def paced_targets(run: Run, delay_ms: int) -> dict[str, Target]:
    endpoints = run.endpoints
    streamed = targets(endpoints, "sse", SSE_DELTAS, delay_ms=delay_ms, sent_at=True)
    collected = targets(endpoints, "short", SSE_DELTAS, delay_ms=delay_ms, sent_at=True)
    body = request_body(SSE_DELTAS, stream=False, delay_ms=delay_ms, sent_at=True)
    gateway = collected["gateway"]
    v1 = Target(
        gateway.host,
        gateway.port,
        b"POST",
        b"/v1/responses",
        gateway.headers,
        body,
        JSON_DONE,
        sent_at=True,
    )
    return {
        "direct": streamed["direct"],
        "gateway stream": streamed["gateway"],
        "gateway json": gateway,
        "gateway v1 json": v1,
    }


async def paced_run(run: Run, plan: PacedPlan) -> dict[str, Any]:
    paths = paced_targets(run, plan.delay_ms)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in PATHS}
    for name, target in paths.items():  # warm-up: every path answers before we measure
        warm = await run_round(target, 2, 0.1)
        if not warm.ok:
            raise RuntimeError(f"paced extra: {name} failed its warm-up: {dict(warm.errors)}")
    for index in range(plan.rounds):
        # All paths at once: they share the emulator's load and timer jitter, which move
        # a paced request's duration by tens of milliseconds from one window to the next.
        results = await _all_at_once(paths, plan)
        for name in PATHS:
            errors_path = "direct" if name == "direct" else ERRORS_PATH
            run.results.errors.setdefault(errors_path, Counter()).update(results[name].errors)
            rounds[name].append(results[name].figures())
        log(f"paced round {index + 1}/{plan.rounds} done")
    return paced_figures(plan, rounds)


async def _all_at_once(paths: dict[str, Target], plan: PacedPlan) -> dict[str, Any]:
    results: dict[str, Any] = {}
    each = max(1, round(plan.concurrency / len(PATHS)))

    async def one(name: str) -> None:
        results[name] = await run_round(paths[name], each, plan.seconds)

    async with trio.open_nursery() as nursery:
        for name in PATHS:
            nursery.start_soon(one, name)
    return results


FIGURE_KEYS = (
    "p50_ms",
    "p99_ms",
    "ttfb_p50_ms",
    "tail_p50_ms",
    "tail_p99_ms",
    "rps",
    "requests",
    "errors",
)


def paced_figures(plan: PacedPlan, rounds: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians of round medians per path, and each gateway path's added latency (its
    figure minus the direct path's, both from the same rounds), by duration and by tail
    (from the emulator's terminal event to the last byte)."""
    sides = {name: median_of_medians(figures) for name, figures in rounds.items()}
    direct = sides["direct"]
    out: dict[str, Any] = {
        "concurrency": plan.concurrency,
        "delay_ms": plan.delay_ms,
        "rounds": plan.rounds,
        "seconds": plan.seconds,
    }
    for name, side in sides.items():
        out[name] = {key: round(side[key], 3) for key in FIGURE_KEYS if key in side}
        if name != "direct":
            out[name].update(_less(side, direct, "added"))
        if name.endswith("json"):
            out[name].update(_less(side, sides["gateway stream"], "after_stream"))
    return out


def _less(side: dict[str, float], other: dict[str, float], label: str) -> dict[str, float]:
    """`side` minus `other` at p50 and p99 as `<label>_p50_ms`...: by duration, and by tail
    (`tail_<label>_p50_ms`...) when both sides timed tails."""
    kinds = ("", "tail_") if "tail_p50_ms" in side and "tail_p50_ms" in other else ("",)
    return {
        f"{kind}{label}_{q}_ms": round(
            side[f"{kind}{q}_ms"] - other[f"{kind}{q}_ms"], 3 if kind else 2
        )
        for kind in kinds
        for q in ("p50", "p99")
    }
