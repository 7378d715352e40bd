"""Helpers shared by the fault tests: leak checks, instance settings, routing probes."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from harness import Stack, parse_sse, responses_body

from pooler.actors import messages as m
from pooler.actors.runtime import call
from pooler.store.instance_settings import update_instance_settings
from pooler.web.leasing import release

RESPONSES = "/backend-api/codex/responses"


# --- no task, thread or socket left behind --------------------------------------------------


def task_count() -> int:
    """Every task of this trio run, from the root down."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def open_fds() -> set[str]:
    """The process's open file descriptors. Collects garbage first, so that a socket an
    earlier test left to the collector is not counted for (or against) this one."""
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def pooler_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pooler")]


@asynccontextmanager
async def no_leaks(settle_s: float = 5.0) -> AsyncIterator[None]:
    """Around a whole stack: once the block is done, every task it started has exited and
    every socket or file it opened is closed (within `settle_s`)."""
    tasks, fds = task_count(), open_fds()
    yield
    with trio.move_on_after(settle_s):
        while task_count() != tasks or open_fds() - fds:
            await trio.sleep(0.05)
    assert task_count() == tasks, f"{task_count() - tasks} task(s) leaked"
    assert pooler_threads() == []
    leaked = {fd: _describe_fd(fd) for fd in sorted(open_fds() - fds)}
    assert not leaked, f"file descriptors leaked: {leaked}"


def _describe_fd(fd: str) -> str:
    """`socket:[inode] local -> remote` for a TCP socket, else where the fd points."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
    if target.startswith("socket:["):
        inode = target[8:-1]
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            with open(table) as rows:
                for row in rows.readlines()[1:]:
                    cols = row.split()
                    if cols[9] == inode:
                        local, remote = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
                        return f"{target} port {local} -> {remote} state {cols[3]}"
        with open("/proc/self/net/unix") as rows:
            for row in rows.readlines()[1:]:
                cols = row.split()
                if cols[6] == inode:
                    return f"{target} unix {cols[7] if len(cols) > 7 else ''}"
    return target


# --- settings and state ---------------------------------------------------------------------


async def set_instance_settings(stack: Stack, **changes: Any) -> None:
    """Store instance settings and have the gateway apply them now (not ~0.1 s later)."""
    await stack.database.run(lambda conn: update_instance_settings(conn, changes, actor="test"))
    await stack.gateway.reload()


async def arm(stack: Stack, label: str, kind: str, times: int = 1, **extra: Any) -> None:
    """`stack.fault` with the emulator's extra knobs (e.g. `stall_seconds`)."""
    body = {"account_id": label, "kind": kind, "times": times, **extra}
    await stack.control("POST", "faults", body)


def handle_of(stack: Stack, account_id: str) -> Any:
    """The PoolSupervisor's handle on one account (state, snapshot, mailbox, upstream)."""
    return stack.gateway.pool_supervisor.accounts[account_id]


def pool_id(stack: Stack) -> str:
    return str(next(iter(stack.gateway.pool_supervisor.pools)))


async def served(stack: Stack) -> list[tuple[str, int | None, str | None]]:
    """(label, status, fault) of every upstream /responses request, in order."""
    return [
        (stack.label_of(r["account_id"]), r["status"], r["fault"])
        for r in await stack.upstream_requests()
    ]


async def lease_choice(stack: Stack) -> m.LeaseGranted:
    """Ask the PoolSupervisor for a lease exactly as a handler does (no continuity key),
    hand it straight back, and return the answer: the lease and the choice behind it."""
    granted: m.LeaseGranted = await call(
        stack.gateway.pool_mailbox,
        lambda reply: m.LeaseRequest(pool_id(stack), (), frozenset(), reply),
        timeout=5,
    )
    if granted.lease is not None:
        release(granted.lease, m.Outcome(m.CANCELLED))
    return granted


async def log_row(stack: Stack, request_id: str, *columns: str) -> tuple[Any, ...]:
    """The request-log row of `request_id` (waits for the LogWriter)."""
    query = f"SELECT {', '.join(columns)} FROM request_logs WHERE request_id = %s"
    with trio.fail_after(10):
        while True:
            row = await stack.database.run(
                lambda conn: conn.execute(query, (request_id,)).fetchone()
            )
            if row is not None:
                return tuple(row)
            await trio.sleep(0.05)


# --- requests -------------------------------------------------------------------------------


def slow(deltas: int, delay_ms: int) -> dict[str, str]:
    """The emulator's per-request knobs: `deltas` text deltas, `delay_ms` before each event."""
    return {"x-emulator-delay-ms": str(delay_ms), "x-emulator-events": str(deltas)}


def event_types(text: str) -> list[str]:
    return [e["type"] for e in parse_sse(text)]


async def complete(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    """One streamed /responses request that must come back 200 and completed."""
    response = await client.post(RESPONSES, json=responses_body(**extra))
    assert response.status_code == 200, response.text
    assert event_types(response.text)[-1] == "response.completed", response.text
    return response


async def stream_and_leave(stack: Stack, **extra: Any) -> str:
    """Start a stream, cancel it once the first text delta arrives (the client goes away
    mid-stream); the request id."""
    request_id = ""
    async with stack.client() as client:
        with trio.CancelScope() as scope:
            body = responses_body(**extra)
            async with client.stream("POST", RESPONSES, json=body) as response:
                assert response.status_code == 200
                request_id = response.headers["x-request-id"]
                seen = ""
                async for chunk in response.aiter_text():
                    seen += chunk
                    if "response.output_text.delta" in seen:
                        scope.cancel()
                        await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught, "the stream ended before the client could leave"
    return request_id
