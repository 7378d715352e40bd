"""The gateway's own actors under its supervisor: the PoolSupervisor, the LogWriter and the
Scheduler are killed in turn under traffic; each restarts, the gateway keeps answering, and
no request-log row is lost.

Real stack (emulator, PostgreSQL, gateway), spoken to over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from harness import open_stack, parse_sse, responses_body
from helpers import lease_choice

RESPONSES = "/backend-api/codex/responses"
CORE = ("pool-supervisor", "log-writer", "scheduler")


async def test_killing_each_core_actor_under_traffic_keeps_the_gateway_answering(
    db_url: str, tmp_path: Path
) -> None:
    # No quota used per request: the traffic runs for as long as the restarts take, and
    # 2 % a request would end it in usage-limit refusals after 150 answers on a fast gateway.
    stack_opened = open_stack(db_url, tmp_path, percent_per_request=0.0)
    async with stack_opened as stack, stack.client() as client:
        gateway = stack.gateway
        actors = gateway.actors
        assert actors is not None and set(CORE) <= set(actors.children)
        log_writer, pool_supervisor = gateway.log_writer, gateway.pool_supervisor
        answers: list[httpx.Response] = []
        stop = trio.Event()

        async def traffic(worker: int) -> None:
            n = 0
            while not stop.is_set():
                body = responses_body(prompt_cache_key=f"traffic-{worker}-{n}")
                answers.append(await client.post(RESPONSES, json=body))
                n += 1

        async def answered(more: int) -> None:
            target = len(answers) + more
            while len(answers) < target:
                await trio.sleep(0.01)

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for worker in range(3):
                    nursery.start_soon(traffic, worker)
                for name in CORE:
                    child = actors.children[name]
                    await answered(3)  # under traffic
                    actors.crash_child(name, RuntimeError(f"{name} bug"))
                    while child.stats.restarts < 1 or not child.running:
                        await trio.sleep(0.01)
                    await answered(6)  # and answering after the restart
                stop.set()

            for name in CORE:  # each was restarted once, in place
                assert actors.children[name].stats.crashes == 1
                assert actors.children[name].stats.restarts == 1
            assert gateway.log_writer is log_writer
            assert gateway.pool_supervisor is pool_supervisor

            # Every client got an answer, and every answer was a complete one: no request
            # met a dead actor (a crash lands between two messages, never inside one).
            assert len(answers) >= 3 * 9
            for response in answers:
                assert response.status_code == 200, response.text
                assert parse_sse(response.text)[-1]["type"] == "response.completed"

            # The restarted PoolSupervisor routes as before, over every account.
            assert len(pool_supervisor.accounts) == 3
            assert all(h.snapshot.alive for h in pool_supervisor.accounts.values())
            granted = await lease_choice(stack)
            assert granted.lease is not None and len(granted.choice.candidates) == 3

            # No request-log row was lost across the LogWriter's restart.
            wanted = {r.headers["x-request-id"] for r in answers}
            while True:
                rows = await stack.database.run(
                    lambda conn: conn.execute("SELECT request_id FROM request_logs").fetchall()
                )
                if wanted <= {row[0] for row in rows}:
                    break
                await trio.sleep(0.05)
            assert log_writer.dropped == 0
