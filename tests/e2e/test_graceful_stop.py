"""A graceful stop loses no request-log row (issue 11): a real `pooler serve` process gets
SIGTERM right after a burst of traffic that includes a row PostgreSQL would refuse (a NUL
in the model); it exits 0 and every answered request is in the database. On the old code
the refused row made the final flush give up, and every row still buffered was lost."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import harness
import httpx
import trio
from harness import free_port, responses_body, run_process, seed_stack, wait_for_line

from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState

REQUESTS = 120
CONCURRENCY = 12


async def test_sigterm_right_after_traffic_loses_no_log_row(db_url: str, tmp_path: Path) -> None:
    state = EmulatorState(accounts=2)
    database = Database.open(db_url, max_size=2)
    answered: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            upstream_port = await nursery.start(serve_emulator, state)
            upstream = f"http://127.0.0.1:{upstream_port}"
            config = harness.test_config(tmp_path / "data", db_url, upstream)
            key = await seed_stack(database, config, state)
            port = free_port()
            env = harness.process_env(config)
            command = [sys.executable, "-m", "pooler.cli.main", "serve", "--port", str(port)]
            gateway: trio.Process = await nursery.start(run_process, command, env)
            await wait_for_line(gateway, b"listening on", 60)

            headers = {"authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:

                async def one(n: int) -> None:
                    body = responses_body(model="x\u0000") if n == 7 else responses_body()
                    answer = await client.post("/backend-api/codex/responses", json=body)
                    answered.append(answer.status_code)

                with trio.fail_after(120):
                    for start in range(0, REQUESTS, CONCURRENCY):
                        async with trio.open_nursery() as burst:
                            for n in range(start, start + CONCURRENCY):
                                burst.start_soon(one, n)
                    gateway.send_signal(signal.SIGTERM)  # right after the last answer
                    assert await gateway.wait() == 0
            nursery.cancel_scope.cancel()

        stored = database.run_sync(
            lambda conn: conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status_code = 200),"
                " count(*) FILTER (WHERE model LIKE 'x\\\\x00%%') FROM request_logs"
            ).fetchone()
        )
    finally:
        database.close()
    assert len(answered) == REQUESTS
    assert stored is not None
    total, ok, hostile = stored
    assert total == REQUESTS, (total, answered)
    assert ok == answered.count(200)
    assert hostile == 1
