"""Two `pooler serve` processes on one PostgreSQL (DESIGN §11), each with its own data dir,
configured from a third (`pooler admin ...`): a key works on both (they share the key secret
through the environment), a Pool change reaches both within a second, and a conversation
that moves to the other process stays on its account."""

from __future__ import annotations

import json
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from harness import (
    POOL,
    free_port,
    responses_body,
    run_pooler,
    run_process,
    shared_env,
    wait_for_line,
)

from pooler.cli.demo import seed_demo
from pooler.config import load_config
from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState
from pooler.web.leasing import continuity_digest

RESPONSES = "/backend-api/codex/responses"
WITHIN_A_SECOND = 1.0
WRITE_BEHIND_DEADLINE_S = 2.0  # pins are written behind every 0.5 s
PEER_READ_S = 0.5  # after a pin is stored, the other process reads it on NOTIFY


async def post(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    return await client.post(
        RESPONSES, json=responses_body(**extra), headers={"authorization": f"Bearer {key}"}
    )


async def log_rows(database: Database, request_ids: list[str]) -> dict[str, str | None]:
    """Each request's continuity outcome, once the serving process has logged it."""
    with trio.fail_after(15):
        while True:
            rows = await database.run(
                lambda conn: conn.execute(
                    "SELECT request_id, continuity FROM request_logs WHERE request_id = ANY(%s)",
                    (request_ids,),
                ).fetchall()
            )
            if len(rows) == len(request_ids):
                return dict(rows)
            await trio.sleep(0.05)


async def wait_for_stored_pins(database: Database, digests: list[bytes]) -> None:
    with trio.fail_after(WRITE_BEHIND_DEADLINE_S):
        while True:
            found = await database.run(
                lambda conn: conn.execute(
                    "SELECT count(*) FROM continuity_pins WHERE key_digest = ANY(%s)",
                    (digests,),
                ).fetchall()
            )
            if found == [(len(digests),)]:
                return
            await trio.sleep(0.05)


async def test_two_serve_processes_share_one_database(db_url: str, tmp_path: Path) -> None:
    state = EmulatorState(accounts=3)
    database = Database.open(db_url, max_size=2)
    try:
        async with trio.open_nursery() as nursery:
            upstream = f"http://127.0.0.1:{await nursery.start(serve_emulator, state)}"
            env = shared_env(tmp_path, db_url, upstream)
            await database.run(partial(seed_demo, config=load_config(env), state=state))
            python = [sys.executable, "-m", "pooler.cli.main"]
            ports = [free_port(), free_port()]
            gateways = [  # separate data dirs: nothing but the environment is shared
                await nursery.start(
                    run_process,
                    [*python, "serve", "--port", str(port)],
                    {**env, "CODEX_POOLER_DATA_DIR": str(tmp_path / f"node-{port}")},
                )
                for port in ports
            ]
            for gateway in gateways:
                await wait_for_line(gateway, b"listening on", 60)
            clients = [
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) for port in ports
            ]
            try:
                await _share_keys_pools_and_conversations(env, database, state, clients)
            finally:
                for client in clients:
                    await client.aclose()
            for gateway in gateways:  # SIGTERM drains and exits 0
                gateway.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                for gateway in gateways:
                    assert await gateway.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        database.close()


async def _share_keys_pools_and_conversations(
    env: dict[str, str],
    database: Database,
    state: EmulatorState,
    clients: list[httpx.AsyncClient],
) -> None:
    first, second = clients

    def label(upstream_account_id: str) -> str:
        found = state.find_account(upstream_account_id)
        assert found is not None
        return found.label

    def last_served() -> str:
        responses = [r for r in state.requests if str(r["path"]).endswith("/responses")]
        return label(responses[-1]["account_id"])

    # A key created by `pooler admin` works on both processes within a second.
    created = await run_pooler(env, "admin", "key", "create", "--pool", POOL, "--json")
    key, key_id = json.loads(created)["key"], json.loads(created)["id"]
    with trio.fail_after(WITHIN_A_SECOND):
        for client in clients:
            while (response := await post(client, key)).status_code == 401:
                await trio.sleep(0.02)
            assert response.status_code == 200

    # Conversations begun on the first process continue on their account on the second.
    names = [f"moving-{i}" for i in range(3)]
    began = []
    for name in names:
        assert (await post(first, key, prompt_cache_key=name)).status_code == 200
        began.append(last_served())
    assert len(set(began)) >= 2, began  # spread: no follow-up lands right by luck
    await wait_for_stored_pins(database, [continuity_digest("prompt_cache_key", n) for n in names])
    await trio.sleep(PEER_READ_S)
    request_ids = []
    for name, account in zip(names, began, strict=True):
        response = await post(second, key, prompt_cache_key=name)
        assert response.status_code == 200
        assert last_served() == account
        request_ids.append(response.headers["x-request-id"])
    assert set((await log_rows(database, request_ids)).values()) == {"kept"}

    # A Pool change made by `pooler admin` is applied by both within a second.
    await run_pooler(
        env, "admin", "pool", "update", POOL, "--strategy", "fill_first", "--continuity", "off"
    )
    await trio.sleep(WITHIN_A_SECOND)
    request_ids = []
    for client in clients:
        response = await post(client, key, prompt_cache_key=names[0])
        assert response.status_code == 200
        request_ids.append(response.headers["x-request-id"])
    assert set((await log_rows(database, request_ids)).values()) == {"disabled"}

    # A key revoked by `pooler admin` is refused by both within a second.
    await run_pooler(env, "admin", "key", "revoke", key_id)
    with trio.fail_after(WITHIN_A_SECOND):
        for client in clients:
            while (await post(client, key)).status_code != 401:
                await trio.sleep(0.02)
