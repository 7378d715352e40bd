"""A client that leaves before its answer is complete cancels the upstream attempt and is
logged as its disconnect, through Hypercorn's own report (pooler.client_gone), with no
task of the request's own watching for it.

Each client here is a raw socket that closes while the gateway waits on a stalled upstream
(nothing sent yet, streamed or collected) or mid-stream. An Instrument counts the tasks
started under the gateway's request tasks: a watcher per request would be one each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from harness import Stack, open_stack, responses_body
from helpers import slow

CODEX = "/backend-api/codex/responses"
CHAT = "/v1/chat/completions"


class RequestTasks(trio.abc.Instrument):
    """Counts the tasks started, at any depth, under the tasks Hypercorn spawns to run
    the application for an HTTP request to `port` (the gateway's, not the emulator's)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: set[trio.lowlevel.Task] = set()
        self.spawned_under_requests: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        code = getattr(task.coro, "cr_code", None)
        if code is not None and code.co_name == "_handle" and "hypercorn" in code.co_filename:
            scope = task.coro.cr_frame.f_locals.get("scope") or {}  # type: ignore[attr-defined]
            if scope.get("type") == "http" and (scope.get("server") or (0, 0))[1] == self.port:
                self.requests.add(task)
            return
        parent = task.parent_nursery.parent_task if task.parent_nursery else None
        while parent is not None:
            if parent in self.requests:
                self.spawned_under_requests.append(task.name)
                return
            nursery = parent.parent_nursery
            parent = nursery.parent_task if nursery is not None else None

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.requests.discard(task)


def port_of(stack: Stack) -> int:
    return int(stack.url.rsplit(":", 1)[1])


async def post(stack: Stack, path: str, payload: dict[str, Any]) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(stack))
    body = json.dumps(payload).encode()
    await stream.send_all(
        f"POST {path} HTTP/1.1\r\nHost: pooler\r\nAuthorization: Bearer {stack.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return stream


def held(stack: Stack) -> tuple[int, int]:
    """Leases held and upstream connections in use, over every account."""
    handles = stack.gateway.pool_supervisor.accounts.values()
    return (
        sum(h.snapshot.in_flight for h in handles),
        sum(h.upstream.active_connections for h in handles),
    )


def trim_waits(stack: Stack) -> bool:
    """Whether the gateway's heap trim would wait for a pass with no request in flight."""
    busy = stack.gateway.heap_trimmer.busy
    assert busy is not None
    return busy()


async def stalls(stack: Stack) -> int:
    return sum(r["fault"] == "stall" for r in await stack.upstream_requests())


async def rows(stack: Stack, count: int) -> list[tuple[str, int, str]]:
    await stack.wait_for_logs(count)
    found = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT route, status_code, outcome FROM request_logs ORDER BY created_at"
        ).fetchall()
    )
    return [tuple(row) for row in found]


async def leave_while_stalled(stack: Stack, path: str, payload: dict[str, Any]) -> None:
    """Ask, wait until the upstream has the request (and stalls), then close the socket."""
    before = await stalls(stack)
    stream = await post(stack, path, payload)
    try:
        while await stalls(stack) == before:
            await trio.sleep(0.02)
        assert held(stack) == (1, 1)
        assert trim_waits(stack)
    finally:
        await stream.aclose()


async def leave_mid_stream(stack: Stack) -> None:
    stream = await post(stack, CODEX, responses_body(client_metadata=slow(40, 100)))
    try:
        seen = b""
        while b"response.output_text.delta" not in seen:
            chunk = await stream.receive_some(65536)
            assert chunk, seen
            seen += chunk
    finally:
        await stream.aclose()


async def let_go(stack: Stack) -> None:
    """The upstream request is cut and the lease given back, long before the stall (600 s)
    or the first-byte deadline (120 s) would end it."""
    with trio.fail_after(5):
        while held(stack) != (0, 0):
            await trio.sleep(0.02)


async def test_a_client_that_leaves_cancels_its_upstream_with_no_watcher_task(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        tasks = RequestTasks(port_of(stack))
        trio.lowlevel.add_instrument(tasks)
        try:
            with trio.fail_after(60):
                await leave_mid_stream(stack)
                await let_go(stack)
                for account in stack.emulator.accounts:
                    await stack.fault(account.label, "stall", times=100)
                await leave_while_stalled(stack, CODEX, responses_body())
                await let_go(stack)
                chat = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
                await leave_while_stalled(stack, CHAT, chat)  # a collected answer
                await let_go(stack)
                found = await rows(stack, 3)
                assert not trim_waits(stack)
        finally:
            trio.lowlevel.remove_instrument(tasks)
        assert [(status, outcome) for _, status, outcome in found] == [
            (499, "client_disconnected")
        ] * 3
        assert len(tasks.requests) == 0  # every request's task has ended
        assert tasks.spawned_under_requests == []


async def test_a_pipelined_second_request_is_not_a_client_leaving(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        first = json.dumps(responses_body(client_metadata=slow(5, 100))).encode()
        second = json.dumps(responses_body()).encode()
        head = (
            f"POST {CODEX} HTTP/1.1\r\nHost: pooler\r\nAuthorization: Bearer {stack.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
        )
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(stack))
            async with stream:
                # The second request arrives while the first is streaming, in one write.
                await stream.send_all(
                    head.format(len(first)).encode()
                    + first
                    + head.format(len(second)).encode()
                    + second
                )
                received = b""
                while received.count(b"\r\n0\r\n\r\n") < 2:
                    chunk = await stream.receive_some(65536)
                    assert chunk, received[-300:]
                    received += chunk
            found = await rows(stack, 2)
        assert received.count(b"HTTP/1.1 200 ") == 2
        assert received.count(b'"type":"response.completed"') == 2
        assert [(status, outcome) for _, status, outcome in found] == [(200, "completed")] * 2
