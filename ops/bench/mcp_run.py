"""The MCP extra: do operators' MCP clients slow the gateway down?

Before the run (`open_mcp`, through `pooler admin` against the bench gateway's own
database): an owner (the console extra's, so both extras can run in one process), the
instance's gate (`mcp.enabled=true`) and the operator's own, and an MCP token. Then,
round by round: a saturated c=50 short run through the gateway alone gives the rate for
the round (`LOAD` of it); at that rate (open loop, c=50) short requests run directly to
the emulator and through the gateway, first alone, then while `CLIENTS` MCP clients each
call `tools/list` and `list_pools` in turn as fast as they are answered. The added
p50/p99 (gateway minus direct) of the two modes are compared. Last in each round, the
MCP clients run on their own for `seconds / 2`: the gateway's (and its PostgreSQL's) CPU
per answered MCP call, the cost that explains the difference.

The MCP clients are plain httpx POSTs of one JSON-RPC message (the endpoint is
stateless: no `initialize`), in this process, so they share the load generator's core:
they run during the direct run of their mode too, so that cost is on both sides of the
difference. A 503 (the `mcp` bulkhead full) or a 429 (the call pace: `pooler/mcp/
call_pace.py`) is followed by the `Retry-After` pause it asks for, as a well-behaved
client would; answers are counted by status.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from cluster import Endpoints, cpu_seconds, tree_cpu_seconds
from console_run import OWNER
from runner import Run, log, measure
from scenarios import SCENARIOS, targets
from stats import median, median_of_medians, summarize

CLIENTS = 20
LOAD = 0.7  # of the gateway's saturated rate alone, as in the scenarios' latency runs
CAPACITY_S = 2.0
READY_TIMEOUT_S = 30.0
MODES = ("alone", f"with {CLIENTS} MCP clients")
ACCEPT = "application/json, text/event-stream"
CALLS: tuple[dict[str, Any], ...] = (
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "list_pools", "arguments": {}},
    },
)
CALL_NAMES = ("tools/list", "tools/call list_pools")
# 503: the `mcp` bulkhead is full; 429: the token's or the process's call pace; by design
EXPECTED = frozenset({"ok", "status 503", "status 429"})


@dataclass(frozen=True)
class McpPlan:
    rounds: int
    seconds: float  # per run of c=50 short requests (each path, each mode)


QUICK_MCP = McpPlan(rounds=3, seconds=10.0)
FULL_MCP = McpPlan(rounds=5, seconds=10.0)


def open_mcp(admin: Callable[..., str]) -> str:
    """Both gates open for the bench's owner; a new MCP token of theirs. `admin(*args,
    stdin=...)` runs `pooler admin` against the bench gateway's database."""
    owners = json.loads(admin("owner", "list", "--json"))
    if not any(o.get("email") == OWNER["email"] for o in owners):
        admin(
            *("owner", "create", "--email", OWNER["email"], "--password-stdin"),
            stdin=OWNER["password"] + "\n",
        )
    admin("settings", "set", "mcp.enabled=true")
    admin("operator", "mcp", "on", "--email", OWNER["email"])
    created = json.loads(admin("mcp-token", "create", "--email", OWNER["email"], "--json"))
    token: str = created["token"]
    return token


@dataclass
class McpCounts:
    """Answers by kind ("ok", "tool error", "status 503", "transport"...) and the time of
    each answered call."""

    answers: Counter[str]
    latencies_s: list[float]

    @classmethod
    def empty(cls) -> McpCounts:
        return cls(Counter(), [])


def answer_kind(status: int, body: bytes) -> str:
    """How one MCP answer is counted: 200 with a result (and no tool error) is "ok"."""
    if status != 200:
        return f"status {status}"
    try:
        message = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(message, dict) or "result" not in message:
        return "JSON-RPC error"
    result = message["result"]
    return "tool error" if isinstance(result, dict) and result.get("isError") else "ok"


async def mcp_client(client: httpx.AsyncClient, counts: McpCounts, first: int) -> None:
    """One MCP client: `CALLS` in turn (from `first`), as fast as they are answered,
    until cancelled."""
    index = first
    while True:
        started = trio.current_time()
        try:
            answer = await client.post("/mcp", json=CALLS[index % len(CALLS)])
        except httpx.HTTPError as exc:
            counts.answers[f"transport {type(exc).__name__}"] += 1
            await trio.sleep(0.1)
            continue
        kind = answer_kind(answer.status_code, answer.content)
        counts.answers[kind] += 1
        index += 1
        if kind == "ok":
            counts.latencies_s.append(trio.current_time() - started)
        elif answer.status_code in (429, 503):
            await trio.sleep(_retry_after(answer.headers.get("retry-after")))


def _retry_after(value: str | None) -> float:
    try:
        return min(5.0, max(0.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def mcp_http(base: str, token: str) -> httpx.AsyncClient:
    headers = {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    return httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits)


async def wait_for_mcp(client: httpx.AsyncClient) -> None:
    """The gateway applies the gates through NOTIFY: retry until a call is answered."""
    deadline = trio.current_time() + READY_TIMEOUT_S
    while True:
        answer = await client.post("/mcp", json=CALLS[1])
        if answer_kind(answer.status_code, answer.content) == "ok":
            return
        if trio.current_time() > deadline:
            raise RuntimeError(f"/mcp never answered: {answer.status_code} {answer.text[:300]}")
        await trio.sleep(0.2)


async def mcp_only(
    client: httpx.AsyncClient, endpoints: Endpoints, seconds: float
) -> dict[str, float]:
    """The MCP clients alone for `seconds`: calls/s and CPU per answered call (refusals'
    CPU included)."""
    counts = McpCounts.empty()
    pg = endpoints.postgres_pid
    gateway_before = cpu_seconds(endpoints.gateway_pid)
    pg_before = tree_cpu_seconds([pg]) if pg else math.nan
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for client_index in range(CLIENTS):
            nursery.start_soon(mcp_client, client, counts, client_index)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    ok = counts.answers["ok"]
    gateway = cpu_seconds(endpoints.gateway_pid) - gateway_before
    postgres = (tree_cpu_seconds([pg]) if pg else math.nan) - pg_before
    return {
        "calls_per_s": ok / elapsed,
        "refused_per_s": (counts.answers["status 503"] + counts.answers["status 429"]) / elapsed,
        "gateway_cpu_us_per_call": gateway * 1e6 / ok if ok else math.nan,
        "gateway_core_share": gateway / elapsed,
        "postgres_cpu_us_per_call": postgres * 1e6 / ok if ok else math.nan,
    }


async def mcp_run(run: Run, plan: McpPlan) -> dict[str, Any]:
    endpoints = run.endpoints
    if endpoints.mcp_token is None:
        raise RuntimeError("no MCP token: the Cluster did not open /mcp")
    client = mcp_http(f"http://127.0.0.1:{endpoints.gateway_port}", endpoints.mcp_token)
    short = next(s for s in SCENARIOS if s.kind == "short" and s.concurrency == 50)
    paths = targets(endpoints, short.kind, short.deltas)
    added: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    gateway_side: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    rates: list[float] = []
    alone_runs: list[dict[str, float]] = []
    counts = McpCounts.empty()
    calling_s = 0.0
    try:
        await wait_for_mcp(client)
        log(f"mcp: /mcp answers; {CLIENTS} clients, {plan.rounds} rounds of {plan.seconds} s")
        for index in range(plan.rounds):
            capacity = await measure(run, "gateway", paths["gateway"], short, CAPACITY_S)
            rate = LOAD * capacity["rps"]
            if not math.isfinite(rate) or rate <= 0:
                raise RuntimeError(f"the gateway answered nothing at c=50: {capacity}")
            rates.append(rate)
            for mode in MODES:
                async with trio.open_nursery() as nursery:
                    started = trio.current_time()
                    if mode != "alone":
                        for client_index in range(CLIENTS):
                            nursery.start_soon(mcp_client, client, counts, client_index)
                    direct = await measure(
                        run, "direct", paths["direct"], short, plan.seconds, rate
                    )
                    gateway = await measure(
                        run, "gateway", paths["gateway"], short, plan.seconds, rate
                    )
                    if mode != "alone":
                        calling_s += trio.current_time() - started
                    nursery.cancel_scope.cancel()
                added[mode].append(
                    (gateway["p50_ms"] - direct["p50_ms"], gateway["p99_ms"] - direct["p99_ms"])
                )
                gateway_side[mode].append(gateway)
            alone_runs.append(await mcp_only(client, endpoints, plan.seconds / 2))
            log(f"mcp: round {index + 1}/{plan.rounds} done ({rate:.0f} req/s offered)")
    finally:
        await client.aclose()
    unexpected = {kind: n for kind, n in counts.answers.items() if kind not in EXPECTED}
    if unexpected:
        run.results.errors.setdefault("mcp", Counter()).update(unexpected)
    result = figures(added, gateway_side, rates, counts, calling_s)
    result["mcp_only"] = median_of_medians(alone_runs)
    return result


def figures(
    added: dict[str, list[tuple[float, float]]],
    gateway_side: dict[str, list[dict[str, float]]],
    rates: list[float],
    counts: McpCounts,
    calling_s: float,
) -> dict[str, Any]:
    """Medians over rounds, per mode; the MCP clients' answers over the time they ran."""
    modes: dict[str, Any] = {}
    for mode, pairs in added.items():
        sides = gateway_side[mode]
        row: dict[str, Any] = {
            "added_p50_ms": median([p50 for p50, _ in pairs]),
            "added_p99_ms": median([p99 for _, p99 in pairs]),
            "gateway_p99_ms": median([s["p99_ms"] for s in sides]),
            "gateway_core_share": median([s.get("cpu_core_share", math.nan) for s in sides]),
            "probe_p99_ms": median([s["probe_p99_ms"] for s in sides]),
            "loadgen_lag_p99_ms": median([s["loadgen_lag_p99_ms"] for s in sides]),
            "errors": int(sum(s["errors"] for s in sides)),
        }
        if mode != "alone":
            answered = summarize(counts.latencies_s)
            row["mcp_answers"] = dict(counts.answers)
            row["mcp_calls_per_s"] = counts.answers["ok"] / calling_s if calling_s else math.nan
            row["mcp_p50_ms"] = answered.p50 * 1000
            row["mcp_p99_ms"] = answered.p99 * 1000
        modes[mode] = row
    return {
        "clients": CLIENTS,
        "calls": list(CALL_NAMES),
        "offered_rps": median(rates),
        "modes": modes,
    }
