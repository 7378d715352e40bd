"""Helpers for the routing-rule tests: Pool and instance settings, what the emulator saw,
request-log rows, and a stack whose gateway can be restarted on the same database."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import trio
from harness import Stack, parse_sse, responses_body, seed_stack, test_config

from pooler.config import Config
from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState
from pooler.server import RunningGateway, run_gateway
from pooler.store.accounts import pause_account
from pooler.store.instance_settings import update_instance_settings
from pooler.store.pools import update_pool
from pooler.web.settings import GatewaySettings

RESPONSES = "/backend-api/codex/responses"
POOL = "demo"
LIVE_WITHIN_S = 1.0  # a configuration change reaches routing within this (DESIGN §3)


# --- configuration ----------------------------------------------------------------------------


def pool_id(stack: Stack) -> str:
    return str(next(iter(stack.gateway.pool_supervisor.pools)))


async def update_pool_live(stack: Stack, **changes: Any) -> None:
    """Change the Pool in the database only, then wait (at most LIVE_WITHIN_S) for the
    running gateway to route by it: the NOTIFY and reload path, not a direct call."""
    await stack.database.run(lambda conn: update_pool(conn, POOL, actor="test", **changes))
    cap = changes.pop("max_in_flight_per_account", None)
    wanted = {"continuity_enabled": "continuity"}
    with trio.fail_after(LIVE_WITHIN_S):
        while True:
            policy = stack.gateway.pool_policy(pool_id(stack))
            handles = stack.gateway.pool_supervisor.accounts.values()
            if all(getattr(policy, wanted.get(k, k)) == v for k, v in changes.items()) and (
                cap is None or all(h.snapshot.max_in_flight == cap for h in handles)
            ):
                return
            await trio.sleep(0.01)


async def set_instance_settings(stack: Stack, **changes: Any) -> None:
    """Store instance settings (dotted keys: `**{"bulkheads.stream.queue": 0}`) and apply
    them now, without waiting for the notification."""
    await stack.database.run(lambda conn: update_instance_settings(conn, changes, actor="test"))
    await stack.gateway.reload()


async def pause(stack: Stack, label: str) -> str:
    """Pause the account in the database and wait until routing knows; its gateway id."""
    account_id: str = (await stack.account_ids())[label]
    await stack.database.run(lambda conn: pause_account(conn, UUID(account_id), actor="test"))
    handle = stack.gateway.pool_supervisor.accounts[account_id]
    with trio.fail_after(LIVE_WITHIN_S):
        while handle.snapshot.lifecycle != "paused":
            await trio.sleep(0.01)
    return account_id


# --- the emulator -----------------------------------------------------------------------------


async def set_usage(stack: Stack, label: str, primary: float, **extra: Any) -> None:
    await stack.control(
        "POST", "usage", {"account_id": label, "primary_used_percent": primary, **extra}
    )


async def set_reporting(stack: Stack, label: str, **flags: Any) -> None:
    await stack.control("POST", "accounts", {"account_id": label, **flags})


async def arm(stack: Stack, label: str, kind: str, times: int = 1, **extra: Any) -> None:
    await stack.control(
        "POST", "faults", {"account_id": label, "kind": kind, "times": times, **extra}
    )


async def seen(stack: Stack, path_suffix: str = "/responses") -> list[dict[str, Any]]:
    """The emulator's log of upstream requests on that path, oldest first, each with its
    account's label added."""
    entries: list[dict[str, Any]] = await stack.upstream_requests(path_suffix)
    for entry in entries:
        entry["label"] = stack.label_of(entry["account_id"]) if entry["account_id"] else None
    return entries


async def seen_labels(stack: Stack, since: int = 0) -> list[str]:
    return [entry["label"] for entry in (await seen(stack))[since:]]


# --- the gateway ------------------------------------------------------------------------------


def slow(delay_ms: int, events: int = 4) -> dict[str, Any]:
    """client_metadata knobs: `delay_ms` before each of about `events + 6` SSE events."""
    return {
        "client_metadata": {"x-emulator-delay-ms": str(delay_ms), "x-emulator-events": str(events)}
    }


async def post(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    with trio.fail_after(20):
        return await client.post(RESPONSES, json=body or responses_body(), headers=headers)


def completed(response: httpx.Response) -> dict[str, Any]:
    """The `response.completed` event of a 200 stream (fails the test otherwise)."""
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = parse_sse(response.text)
    assert events[-1]["type"] == "response.completed", response.text
    return events[-1]


async def serve_many(client: httpx.AsyncClient, count: int, **extra: Any) -> None:
    for _ in range(count):
        completed(await post(client, responses_body(**extra)))


async def log_row(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request-log row of `request_id` as a dict (waits for the LogWriter)."""
    query = "SELECT * FROM request_logs WHERE request_id = %s"
    with trio.fail_after(10):
        while True:
            row: dict[str, Any] | None = await stack.database.run(
                lambda conn: _fetch_dict(conn.execute(query, (request_id,)))
            )
            if row is not None:
                return row
            await trio.sleep(0.02)


async def attempt_rows(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    await log_row(stack, request_id)  # attempts are written with their request's row
    rows: list[dict[str, Any]] = await stack.database.run(
        lambda conn: [
            dict(zip([c.name for c in cur.description or ()], row, strict=True))
            for cur in [
                conn.execute(
                    "SELECT * FROM request_attempts WHERE request_id = %s ORDER BY attempt",
                    (request_id,),
                )
            ]
            for row in cur.fetchall()
        ]
    )
    return rows


def _fetch_dict(cursor: Any) -> dict[str, Any] | None:
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c.name for c in cursor.description], row, strict=True))


def snapshot_of(stack: Stack, account_id: str) -> Any:
    """The routing snapshot the PoolSupervisor holds for one account."""
    return stack.gateway.pool_supervisor.accounts[account_id].snapshot


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def until(predicate: Callable[[], bool], step: float = 0.05) -> None:
    """Poll `predicate` (the caller bounds the wait with `trio.fail_after`)."""
    while not predicate():
        await trio.sleep(step)


# --- a gateway that can be restarted ----------------------------------------------------------


@dataclass
class GatewayRun:
    running: RunningGateway
    stop: trio.Event
    stopped: trio.Event


async def start_gateway(
    nursery: trio.Nursery, config: Config, database: Database, settings: GatewaySettings | None
) -> GatewayRun:
    """A gateway that stops (drained, its LogWriter flushed, as on SIGTERM) when `stop` is
    set, and sets `stopped` once it has."""
    stop, stopped = trio.Event(), trio.Event()
    # No load balancer in front: no accept grace, and work in flight has what it had
    # before drains were configurable (5 s).
    config = replace(config, drain_seconds=5.0)
    settings = replace(settings or GatewaySettings(), drain_accept_grace_s=0.0)

    async def serve(*, task_status: trio.TaskStatus[RunningGateway]) -> None:
        try:
            await run_gateway(
                config,
                database,
                "127.0.0.1",
                0,
                settings=settings,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        finally:
            stopped.set()

    running: RunningGateway = await nursery.start(serve)
    return GatewayRun(running, stop, stopped)


@dataclass
class RestartableStack:
    """The harness Stack whose gateway `restart()` stops and starts again on the same
    database, emulator and secrets (clients must reconnect: the port changes)."""

    stack: Stack
    nursery: trio.Nursery
    settings: GatewaySettings | None
    run: GatewayRun

    async def restart(self) -> None:
        self.run.stop.set()
        with trio.fail_after(15):
            await self.run.stopped.wait()
        stack = self.stack
        self.run = await start_gateway(self.nursery, stack.config, stack.database, self.settings)
        self.stack.running = self.run.running


@asynccontextmanager
async def open_restartable_stack(
    db_url: str, data_dir: Path, *, settings: GatewaySettings | None = None
) -> AsyncIterator[RestartableStack]:
    """Like harness.open_stack: three emulated accounts in the seeded Pool `demo`."""
    state = EmulatorState(accounts=3)
    database = Database.open(db_url, max_size=8)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_emulator, state)
            emulator_url = f"http://127.0.0.1:{port}"
            config = test_config(data_dir, db_url, emulator_url)
            key = await seed_stack(database, config, state)
            run = await start_gateway(nursery, config, database, settings)
            stack = Stack(config, database, state, emulator_url, run.running, key)
            yield RestartableStack(stack, nursery, settings, run)
            nursery.cancel_scope.cancel()
    finally:
        database.close()


def now() -> float:
    return time.time()
