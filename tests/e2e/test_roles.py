"""Roles with real `pooler serve` processes on one PostgreSQL (pooler.roles): of two `all`
processes exactly one leads, and when it is killed the other takes over within seconds; a
`worker` serves no gateway route but runs the once-per-cluster jobs; a `web` process serves
requests but never runs them."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import trio
from harness import free_port, responses_body, run_process, shared_env, wait_for_line

from pooler.cli.demo import seed_demo
from pooler.config import load_config
from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState

RESPONSES = "/backend-api/codex/responses"
PYTHON = [sys.executable, "-m", "pooler.cli.main"]
TAKEOVER_S = 10.0  # the follower asks every 2 s; the lock is freed when the socket closes


async def start_node(
    nursery: trio.Nursery, env: dict[str, str], tmp_path: Path, role: str
) -> tuple[trio.Process, str, bytes]:
    """A `pooler serve` process of `role` with its own data dir: the process, its URL and
    what it printed up to listening."""
    port = free_port()
    node_env = {
        **env,
        "CODEX_POOLER_ROLE": role,
        "CODEX_POOLER_DATA_DIR": str(tmp_path / f"node-{port}"),
    }
    proc = await nursery.start(run_process, [*PYTHON, "serve", "--port", str(port)], node_env)
    seen = await wait_for_line(proc, b"listening on", 60)
    return proc, f"http://127.0.0.1:{port}", seen


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def leads(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    return metric(response.text, "codex_pooler_leader") == 1.0


async def until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    with trio.fail_after(seconds):
        while not await check():
            await trio.sleep(0.1)


async def count_rows(database: Database, table: str) -> int:
    row = await database.run(lambda conn: conn.execute(f"SELECT count(*) FROM {table}").fetchone())
    assert row is not None
    return int(row[0])


async def test_one_of_two_leads_and_the_other_takes_over_when_it_is_killed(
    db_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            env = shared_env(tmp_path, db_url, "http://127.0.0.1:9")
            (a, a_url, _), (b, b_url, _) = [
                await start_node(nursery, env, tmp_path, "all") for _ in range(2)
            ]

            async def one_leads() -> bool:
                return [await leads(a_url), await leads(b_url)].count(True) == 1

            await until(one_leads, TAKEOVER_S)
            await trio.sleep(3)  # the follower has asked again meanwhile, and was refused
            assert await one_leads()
            leader, follower, follower_url = (a, b, b_url) if await leads(a_url) else (b, a, a_url)
            said = await wait_for_line(leader, b"leader: this node", 5)
            assert b"once-per-cluster" in said

            leader.send_signal(signal.SIGKILL)
            with trio.fail_after(5):
                await leader.wait()

            async def follower_leads() -> bool:
                return await leads(follower_url)

            await until(follower_leads, TAKEOVER_S)
            await wait_for_line(follower, b"leader: this node", 5)
            follower.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await follower.wait() == 0
            nursery.cancel_scope.cancel()


async def test_a_worker_serves_no_gateway_route_and_a_web_node_runs_no_cluster_job(
    db_url: str, tmp_path: Path
) -> None:
    state = EmulatorState(accounts=1)
    database = Database.open(db_url, max_size=2)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                upstream = f"http://127.0.0.1:{await nursery.start(serve_emulator, state)}"
                env = shared_env(tmp_path, db_url, upstream)
                seeded = partial(seed_demo, config=load_config(env), state=state)
                key = await database.run(seeded)
                await _web_then_worker(nursery, env, tmp_path, database, key)
                nursery.cancel_scope.cancel()
    finally:
        database.close()


async def _web_then_worker(
    nursery: trio.Nursery, env: dict[str, str], tmp_path: Path, database: Database, key: str
) -> None:
    web, web_url, _ = await start_node(nursery, env, tmp_path, "web")
    async with httpx.AsyncClient(base_url=web_url, timeout=20) as client:
        answer = await client.post(
            RESPONSES, json=responses_body(), headers={"authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
        with trio.fail_after(10):
            while await count_rows(database, "request_logs") < 1:
                await trio.sleep(0.1)
        await trio.sleep(2.5)  # a leader would have rolled the row up by now
        assert not await leads(web_url)
        text = (await client.get("/metrics")).text
        assert 'codex_pooler_scheduled_job_runs_total{job="usage_tick"}' in text
        assert metric(text, 'codex_pooler_scheduled_job_runs_total{job="stats_rollup"}') == 0
    assert await count_rows(database, "stats_hourly") == 0

    worker, worker_url, printed = await start_node(nursery, env, tmp_path, "worker")
    assert b"worker: jobs and probes only" in printed
    async with httpx.AsyncClient(base_url=worker_url, timeout=20) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        for path in (RESPONSES, "/v1/chat/completions", "/mcp"):
            refused = await client.post(
                path, json=responses_body(), headers={"authorization": f"Bearer {key}"}
            )
            assert refused.status_code == 404, (path, refused.text)
            assert set(refused.json()["error"]) >= {"message", "type", "code"}
        assert (await client.get("/admin/")).status_code == 404
        await until(partial(leads, worker_url), TAKEOVER_S)
        with trio.fail_after(10):  # the worker, as leader, rolled up the web node's row
            while await count_rows(database, "stats_hourly") < 1:
                await trio.sleep(0.1)
        text = (await client.get("/metrics")).text
        rollups = metric(text, 'codex_pooler_scheduled_job_runs_total{job="stats_rollup"}')
        assert rollups is not None and rollups >= 1
        assert "usage_tick" not in text and "codex_pooler_requests" not in text
    assert not await leads(web_url)
    for proc in (web, worker):
        proc.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        for proc in (web, worker):
            assert await proc.wait() == 0
