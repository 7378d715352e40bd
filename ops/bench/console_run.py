"""The console extra: does an operator using the admin pages slow the gateway down?

The bench gateway's owner is created at `/bootstrap` and signs in; then, round by round,
short requests run one at a time (c=1, closed loop) through the gateway and directly to
the emulator: alone, while an operator pages through the console at a person's pace
(`HUMAN_PAGES_PER_S`), and while a script pages through it as fast as it answers (every
console page that answers 200 to the owner: Pools, each Pool, accounts, keys, own
settings). The added p50/p99 of the three are compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from runner import Run, log, measure
from scenarios import SCENARIOS, targets
from stats import median

OWNER = {
    "email": "bench-owner@example.com",
    "display_name": "Bench owner",
    "password": "a long bench password for the console",
}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
POOL_LINK_RE = re.compile(r'href="(/admin/pools/[^"#?]+)"')
CANDIDATE_PAGES = ("/admin/pools", "/admin/settings", "/admin/upstreams", "/admin/api-keys")
HUMAN_PAGES_PER_S = 2.0
MODES = ("alone", "operator, 2 pages/s", "script, flat out")


@dataclass(frozen=True)
class ConsolePlan:
    rounds: int
    seconds: float  # per run of c=1 short requests


QUICK_CONSOLE = ConsolePlan(rounds=3, seconds=3.0)
FULL_CONSOLE = ConsolePlan(rounds=5, seconds=6.0)


async def signed_in_operator(base: str) -> tuple[httpx.AsyncClient, list[str]]:
    """The bench's owner, signed in; and the console pages it can page through."""
    client = httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False)
    shown = await client.get("/bootstrap")
    if shown.status_code == 200:  # no owner yet: creating it signs it in
        form = {"csrf_token": _csrf(shown.text), **OWNER}
        created = await client.post("/bootstrap", data=form)
        if created.status_code not in (302, 303):
            raise RuntimeError(f"bootstrap answered {created.status_code}")
    else:
        login = await client.get("/login")
        credentials = {"email": OWNER["email"], "password": OWNER["password"]}
        form = {"csrf_token": _csrf(login.text), **credentials}
        signed = await client.post("/login", data=form)
        if signed.status_code not in (302, 303):
            raise RuntimeError(f"sign-in answered {signed.status_code}")
    pages = [page for page in CANDIDATE_PAGES if (await client.get(page)).status_code == 200]
    if "/admin/pools" in pages:
        listing = (await client.get("/admin/pools")).text
        pages += sorted(set(POOL_LINK_RE.findall(listing)))[:5]
    return client, pages


def _csrf(html: str) -> str:
    found = CSRF_RE.search(html)
    if found is None:
        raise RuntimeError("the console page has no CSRF token")
    return found.group(1)


async def page_through(
    client: httpx.AsyncClient, pages: list[str], counts: dict[str, int], pace_s: float
) -> None:
    """Ask for every page in turn, one every `pace_s` seconds (0: as fast as they answer),
    until cancelled."""
    while True:
        for page in pages:
            answer = await client.get(page)
            key = "ok" if answer.status_code == 200 else f"status {answer.status_code}"
            counts[key] = counts.get(key, 0) + 1
            await trio.sleep(pace_s)


async def console_run(run: Run, plan: ConsolePlan) -> dict[str, Any]:
    endpoints = run.endpoints
    client, pages = await signed_in_operator(f"http://127.0.0.1:{endpoints.gateway_port}")
    log(f"console: the operator pages through {len(pages)} pages")
    short = next(s for s in SCENARIOS if s.kind == "short" and s.concurrency == 1)
    paths = targets(endpoints, short.kind, short.deltas)
    added: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    counts: dict[str, dict[str, int]] = {mode: {"ok": 0} for mode in MODES[1:]}
    paging_s = {mode: 0.0 for mode in MODES[1:]}
    try:
        for index in range(plan.rounds):
            for mode in MODES:
                direct = await measure(run, "direct", paths["direct"], short, plan.seconds)
                async with trio.open_nursery() as nursery:
                    started = trio.current_time()
                    if mode != "alone":
                        pace = 1 / HUMAN_PAGES_PER_S if mode == MODES[1] else 0.0
                        nursery.start_soon(page_through, client, pages, counts[mode], pace)
                    gateway = await measure(run, "gateway", paths["gateway"], short, plan.seconds)
                    if mode != "alone":
                        paging_s[mode] += trio.current_time() - started
                    nursery.cancel_scope.cancel()
                added[mode].append(
                    (gateway["p50_ms"] - direct["p50_ms"], gateway["p99_ms"] - direct["p99_ms"])
                )
            log(f"console: round {index + 1}/{plan.rounds} done")
    finally:
        await client.aclose()
    figures: dict[str, Any] = {"pages": pages, "modes": {}}
    for mode, pairs in added.items():
        row: dict[str, Any] = {
            "added_p50_ms": median([p50 for p50, _ in pairs]),
            "added_p99_ms": median([p99 for _, p99 in pairs]),
        }
        if mode != "alone":
            row["console_answers"] = counts[mode]
            row["console_pages_per_s"] = counts[mode]["ok"] / paging_s[mode]
        figures["modes"][mode] = row
    return figures
