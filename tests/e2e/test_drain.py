"""Draining on SIGTERM (issue 16, item 5), with a real `pooler serve` process: /readyz
answers 503 at once; a paced SSE stream in flight completes; an idle websocket gets close
1012; after the accept grace a new connection is refused; every answered request has its
row; the process exits 0. And the drain deadline bounds a stream that would outlive it:
the stream is cut and logged, and the process still exits 0."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
import trio
import trio_websocket
from harness import free_port, parse_sse, responses_body, run_process, seed_stack, wait_for_line

from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState

PATH = "/backend-api/codex/responses"


@dataclass
class Served:
    process: trio.Process
    port: int
    key: str
    database: Database

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rows(self) -> list[tuple[str, str | None, int | None, str, str | None]]:
        return self.database.run_sync(
            lambda conn: conn.execute(
                "SELECT route, transport, status_code, outcome, error_code FROM request_logs"
                " ORDER BY created_at"
            ).fetchall()
        )


@asynccontextmanager
async def served(db_url: str, tmp_path: Path, drain_seconds: int) -> AsyncIterator[Served]:
    """A `pooler serve` process (its own emulator) with CODEX_POOLER_DRAIN_SECONDS set."""
    state = EmulatorState(accounts=2)
    database = Database.open(db_url, max_size=2)
    try:
        async with trio.open_nursery() as nursery:
            upstream_port = await nursery.start(serve_emulator, state)
            upstream = f"http://127.0.0.1:{upstream_port}"
            config = harness.test_config(tmp_path / "data", db_url, upstream)
            key = await seed_stack(database, config, state)
            port = free_port()
            env = harness.process_env(config, CODEX_POOLER_DRAIN_SECONDS=str(drain_seconds))
            command = [sys.executable, "-m", "pooler.cli.main", "serve", "--port", str(port)]
            process: trio.Process = await nursery.start(run_process, command, env)
            await wait_for_line(process, b"listening on", 60)
            yield Served(process, port, key, database)
            nursery.cancel_scope.cancel()  # the process is killed if still running
    finally:
        database.close()


def paced(delay_ms: int, events: int) -> dict[str, Any]:
    """A stream the emulator paces: `events` text deltas, `delay_ms` before each event."""
    return responses_body(
        client_metadata={"x-emulator-delay-ms": str(delay_ms), "x-emulator-events": str(events)}
    )


async def probe(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as fresh:
        return (await fresh.get(f"{url}/readyz")).status_code


async def connection_refused(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_sigterm_drains_streams_websockets_and_rows(db_url: str, tmp_path: Path) -> None:
    async with served(db_url, tmp_path, drain_seconds=20) as gw:
        headers = {"authorization": f"Bearer {gw.key}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
            for _ in range(3):  # answered before the drain
                assert (await client.post(PATH, json=responses_body())).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            ws_headers = [
                (b"authorization", f"Bearer {gw.key}".encode()),
                (b"session-id", b"sess-drain"),
            ]
            ws_url = gw.url.replace("http://", "ws://") + PATH
            async with (
                trio_websocket.open_websocket_url(ws_url, extra_headers=ws_headers) as ws,
                trio_websocket.open_websocket_url(ws_url, extra_headers=ws_headers) as busy,
            ):
                await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
                while json.loads(await ws.get_message())["type"] != "response.completed":
                    pass  # one turn, then the socket is idle
                # A turn in flight across the SIGTERM (paced: 15 deltas, 300 ms apart).
                await busy.send_message(json.dumps({"type": "response.create", **paced(300, 15)}))
                busy_frames = [json.loads(await busy.get_message())]
                events: list[dict[str, Any]] = []
                refused_mid_stream = False

                async with client.stream("POST", PATH, json=paced(300, 30)) as stream:
                    assert stream.status_code == 200
                    lines = stream.aiter_lines()
                    first = await anext(lines)  # the stream is in flight
                    gw.process.send_signal(signal.SIGTERM)

                    with trio.fail_after(3):  # 503 at once, on a fresh connection
                        while (await probe(gw.url)) != 503:
                            await trio.sleep(0.05)
                    # Within the accept grace, a request routed here still lands.
                    late = await client.post(PATH, json=responses_body())
                    assert late.status_code == 200
                    with (
                        trio.fail_after(3),
                        pytest.raises(trio_websocket.ConnectionClosed) as closed,
                    ):
                        await ws.get_message()
                    assert closed.value.reason.code == 1012

                    with trio.fail_after(8):  # the accept grace is 3 s
                        while not await connection_refused(gw.port):
                            await trio.sleep(0.1)
                    refused_mid_stream = True
                    raw = first + "\n" + "\n".join([line async for line in lines])
                events = parse_sse(raw)
                # The turn in flight finished, then its socket closed 1012.
                with trio.fail_after(10):
                    while busy_frames[-1]["type"] != "response.completed":
                        busy_frames.append(json.loads(await busy.get_message()))
                    with pytest.raises(trio_websocket.ConnectionClosed) as busy_closed:
                        await busy.get_message()
                assert busy_closed.value.reason.code == 1012
                deltas = sum(f["type"] == "response.output_text.delta" for f in busy_frames)
                assert deltas == 15
            assert refused_mid_stream
            assert events[-1]["type"] == "response.completed"
            assert sum(e["type"] == "response.output_text.delta" for e in events) == 30

        with trio.fail_after(20):
            assert await gw.process.wait() == 0
        rows = gw.rows()
    http_rows = [r for r in rows if r[1] != "websocket"]
    assert len(http_rows) == 5, rows  # 3 before, the stream, 1 during the drain
    assert all(r[2] == 200 and r[3] == "completed" for r in http_rows), rows
    assert [r[3] for r in rows if r[1] == "websocket"] == ["completed", "completed"], rows


async def test_drain_deadline_cuts_a_stream_that_outlives_it(db_url: str, tmp_path: Path) -> None:
    async with served(db_url, tmp_path, drain_seconds=5) as gw:
        headers = {"authorization": f"Bearer {gw.key}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
            received = 0
            # The deadline (5 s) bounds the stream (30 s), and the process exits 0 soon after.
            with trio.fail_after(5 + 8):
                try:
                    async with client.stream("POST", PATH, json=paced(300, 100)) as stream:
                        assert stream.status_code == 200
                        async for _ in stream.aiter_lines():
                            received += 1
                            if received == 1:
                                gw.process.send_signal(signal.SIGTERM)
                except httpx.HTTPError:
                    pass  # cut: the connection closes before the stream's end
                assert await gw.process.wait() == 0
            assert 0 < received < 100
        rows = gw.rows()
    assert len(rows) == 1, rows
    assert rows[0][1:] == ("http_sse", 200, "stream_failed", "server_stopped"), rows
