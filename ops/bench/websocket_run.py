"""The websocket extra: per-turn latency of websocket Responses sessions, directly to the
emulator and through the gateway, and idle sessions held by one gateway process.

- Turns: each session is one websocket on `GET /backend-api/codex/responses`; a turn sends
  `{"type": "response.create", ...}` and reads text frames up to `response.completed`.
  Timed from the send to the first frame (`codex.rate_limits`) and to `response.completed`;
  one session at c=1, then `concurrent` sessions at once, each running its turns in turn.
- Held: `held` idle sessions through the gateway (each is a client socket plus an
  upstream socket in the gateway), opened `batch` at a time; RSS growth of the gateway
  per session, and the handshake time of one session opened alone after each batch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket
from cluster import rss_bytes
from runner import Run, log
from scenarios import ROUTE, SSE_DELTAS, request_body
from stats import median, percentile

SETTLE_S = 1.0
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WsPlan:
    turns: int  # per session at c=1
    concurrent: int  # sessions at once
    concurrent_turns: int  # per session in the concurrent run
    held: int
    batch: int = 50
    warmup_turns: int = 20


QUICK_WS = WsPlan(turns=300, concurrent=20, concurrent_turns=30, held=200)
FULL_WS = WsPlan(turns=1000, concurrent=20, concurrent_turns=100, held=1000)


@dataclass
class Turns:
    first_s: list[float] = field(default_factory=list)
    done_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def turn_frame(deltas: int = SSE_DELTAS) -> str:
    body = json.loads(request_body(deltas, stream=False))
    return json.dumps({"type": "response.create", **body}, separators=(",", ":"))


def _ends(path: str, run: Run) -> tuple[str, list[tuple[bytes, bytes]]]:
    ep = run.endpoints
    if path == "direct":
        headers = [
            (b"authorization", b"Bearer " + ep.access_token.encode()),
            (b"chatgpt-account-id", ep.account_id.encode()),
        ]
        port = ep.emulator_port
    else:
        headers = [(b"authorization", b"Bearer " + ep.pool_key.encode())]
        port = ep.gateway_port
    return f"ws://127.0.0.1:{port}{ROUTE.decode()}", headers


async def _turn(ws: trio_websocket.WebSocketConnection, frame: str, out: Turns | None) -> None:
    started = trio.current_time()
    await ws.send_message(frame)
    first: float | None = None
    while True:
        text = await ws.get_message()
        now = trio.current_time()
        if first is None:
            first = now - started
        kind = json.loads(text).get("type")
        if kind == "response.completed":
            break
        if kind in ("error", "response.failed"):
            raise RuntimeError(f"turn_{kind}")
    if out is not None:
        out.first_s.append(first)
        out.done_s.append(now - started)


async def _session(
    url: str, headers: list[tuple[bytes, bytes]], turns: int, warmup: int, out: Turns
) -> None:
    frame = turn_frame()
    try:
        with trio.fail_after(TIMEOUT_S + turns):
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                for i in range(warmup + turns):
                    await _turn(ws, frame, out if i >= warmup else None)
    except trio.TooSlowError:
        out.errors["timeout"] += 1
    except RuntimeError as exc:
        out.errors[str(exc)] += 1
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        out.errors[type(exc).__name__] += 1


def _figures(turns: Turns) -> dict[str, Any]:
    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) * 1000, 3) if values else None

    return {
        "turns": len(turns.done_s),
        "first_p50_ms": ms(turns.first_s, 50),
        "first_p99_ms": ms(turns.first_s, 99),
        "done_p50_ms": ms(turns.done_s, 50),
        "done_p99_ms": ms(turns.done_s, 99),
        "errors": dict(turns.errors),
    }


async def _latency(run: Run, sessions: int, turns: int, warmup: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for path in ("direct", "gateway"):
        url, headers = _ends(path, run)
        out = Turns()
        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                nursery.start_soon(_session, url, headers, turns, warmup, out)
        result[path] = _figures(out)
        run.results.errors.setdefault(path, Counter()).update(
            {f"ws_{k}": n for k, n in out.errors.items()}
        )
    added: dict[str, float | None] = {}
    for key in ("first_p50_ms", "first_p99_ms", "done_p50_ms", "done_p99_ms"):
        g, d = result["gateway"][key], result["direct"][key]
        added[key] = round(g - d, 3) if g is not None and d is not None else None
    result["added"] = added
    return result


@dataclass
class Held:
    open_s: list[float] = field(default_factory=list)
    solo_open_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def _hold_one(
    readers: trio.Nursery,
    url: str,
    headers: list[tuple[bytes, bytes]],
    held: Held,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = trio.current_time()
    try:
        with trio.fail_after(TIMEOUT_S):
            ws = await trio_websocket.connect_websocket_url(readers, url, extra_headers=headers)
    except trio.TooSlowError:
        held.errors["open_timeout"] += 1
        task_status.started()
        return
    except (OSError, trio_websocket.HandshakeError) as exc:
        held.errors[type(exc).__name__] += 1
        task_status.started()
        return
    held.open_s.append(trio.current_time() - started)
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await ws.aclose()


async def _hold(
    readers: trio.Nursery,
    url: str,
    headers: list[tuple[bytes, bytes]],
    count: int,
    batch: int,
    held: Held,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        opened = 0
        while opened < count and not held.errors:
            size = min(batch, count - opened) - 1
            async with trio.open_nursery() as starting:
                for _ in range(size):
                    starting.start_soon(nursery.start, _hold_one, readers, url, headers, held)
            before = len(held.open_s)
            await nursery.start(_hold_one, readers, url, headers, held)
            if len(held.open_s) > before:
                held.solo_open_s.append(held.open_s[-1])
            opened += size + 1
        task_status.started()


async def _held_sessions(run: Run, plan: WsPlan) -> dict[str, Any]:
    url, headers = _ends("gateway", run)
    pid = run.endpoints.gateway_pid
    await trio.sleep(SETTLE_S)
    before = rss_bytes(pid)
    held = Held()
    async with trio.open_nursery() as readers:
        async with trio.open_nursery() as nursery:
            await nursery.start(_hold, readers, url, headers, plan.held, plan.batch, held)
            await trio.sleep(SETTLE_S)
            after = rss_bytes(pid)
            nursery.cancel_scope.cancel()
        readers.cancel_scope.cancel()
    opened, solo = len(held.open_s), held.solo_open_s
    run.results.errors.setdefault("gateway", Counter()).update(
        {f"ws_held_{k}": n for k, n in held.errors.items()}
    )
    await trio.sleep(SETTLE_S)
    return {
        "asked": plan.held,
        "opened": opened,
        "failed": dict(held.errors),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_held_mib": round(after / 2**20, 1),
        "kib_per_session": round((after - before) / 1024 / opened, 1) if opened else None,
        "open_ms_p50_all": round(median(held.open_s) * 1000, 2) if opened else None,
        "open_ms_alone_first": round(solo[0] * 1000, 2) if solo else None,
        "open_ms_alone_last": round(solo[-1] * 1000, 2) if solo else None,
    }


async def websocket_run(run: Run, plan: WsPlan) -> dict[str, Any]:
    figures: dict[str, Any] = {"plan": vars(plan).copy()}
    figures["c=1"] = await _latency(run, 1, plan.turns, plan.warmup_turns)
    log(f"websocket c=1: {figures['c=1']}")
    concurrent = await _latency(run, plan.concurrent, plan.concurrent_turns, 3)
    figures[f"c={plan.concurrent}"] = concurrent
    log(f"websocket c={plan.concurrent}: {concurrent}")
    figures["held"] = await _held_sessions(run, plan)
    log(f"websocket held: {figures['held']}")
    return figures
