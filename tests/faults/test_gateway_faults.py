"""The running gateway under faults: a crashed AccountActor, stalled and cut upstreams, a
client that leaves mid-stream, the database going away, and no task left behind.

Every test runs the real stack (emulator, PostgreSQL, gateway) and speaks HTTP to it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import POOL, Stack, open_stack, parse_sse, responses_body
from helpers import open_fds, task_count

from pooler.actors import messages as m
from pooler.actors.runtime import call
from pooler.embedded import start_embedded_postgres, stop_embedded_postgres
from pooler.migrate import migrate
from pooler.store.keys import create_key
from pooler.web.settings import GatewaySettings

RESPONSES = "/backend-api/codex/responses"


def slow(deltas: int, delay_ms: int) -> dict[str, Any]:
    """The emulator's per-request knobs: `deltas` text deltas, `delay_ms` before each event."""
    return {"x-emulator-delay-ms": str(delay_ms), "x-emulator-events": str(deltas)}


async def pinned_account(stack: Stack, client: httpx.AsyncClient, cache_key: str) -> str:
    """Send one request with `cache_key`; the label of the account that served it (the key
    sticks to that account from now on)."""
    response = await client.post(RESPONSES, json=responses_body(prompt_cache_key=cache_key))
    assert response.status_code == 200, response.text
    return stack.label_of((await stack.upstream_requests())[-1]["account_id"])


def event_types(text: str) -> list[str]:
    return [e["type"] for e in parse_sse(text)]


def completed_text(event: dict[str, Any]) -> str:
    return text_of_output(event["response"])


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


async def log_rows(stack: Stack, *columns: str) -> dict[str, tuple[Any, ...]]:
    """request_id -> the given columns, for every request-log row."""
    query = f"SELECT request_id, {', '.join(columns)} FROM request_logs"
    rows = await stack.database.run(lambda conn: conn.execute(query).fetchall())
    return {row[0]: tuple(row[1:]) for row in rows}


async def wait_for_log(stack: Stack, request_id: str, *columns: str) -> tuple[Any, ...]:
    with trio.fail_after(10):
        while True:
            found = (await log_rows(stack, *columns)).get(request_id)
            if found is not None:
                return found
            await trio.sleep(0.05)


def accounts(stack: Stack) -> list[Any]:
    """The PoolSupervisor's account handles (snapshot, mailbox, upstream pool)."""
    return list(stack.gateway.pool_supervisor.accounts.values())


# --- 1. an AccountActor crashes mid-request -------------------------------------------------


async def test_crashed_account_actor_restarts_and_others_keep_serving(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            victim = await pinned_account(stack, client, "victim-conversation")
            victim_id = (await stack.account_ids())[victim]
            supervisor = stack.gateway.pool_supervisor
            handle = supervisor.accounts[victim_id]
            assert supervisor.crashes == 0 and handle.snapshot.alive

            # A slow stream on the victim: 20 deltas, 50 ms before each event (~1.3 s).
            slow_body = responses_body(
                "Reply with exactly: survives",
                prompt_cache_key="victim-conversation",
                client_metadata=slow(20, 50),
            )
            started = trio.Event()
            stream: dict[str, Any] = {}

            async def slow_stream() -> None:
                async with client.stream("POST", RESPONSES, json=slow_body) as response:
                    stream["status"] = response.status_code
                    stream["request_id"] = response.headers["x-request-id"]
                    raw = ""
                    async for chunk in response.aiter_text():
                        raw += chunk
                        if "response.output_text.delta" in raw:
                            started.set()
                    stream["events"] = parse_sse(raw)

            others: list[httpx.Response] = []

            async def other_request(i: int) -> None:
                body = responses_body(prompt_cache_key=f"bystander-{i}")
                others.append(await client.post(RESPONSES, json=body))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_stream)
                await started.wait()
                assert "events" not in stream  # the stream is still running
                crashed = await call(
                    supervisor.mailbox, lambda r: m.CrashAccount(victim_id, r), timeout=5
                )
                assert crashed is True
                for i in range(12):  # the other accounts keep serving meanwhile
                    nursery.start_soon(other_request, i)
                    await trio.sleep(0.02)

            # The supervisor saw the crash and restarted the actor.
            assert supervisor.crashes == 1
            assert handle.stats.crashes == 1
            while not handle.snapshot.alive:
                await trio.sleep(0.01)
            assert handle.stats.restarts == 1

            # Nobody else noticed: every bystander got a complete answer, from every account.
            assert len(others) == 12
            for response in others:
                assert response.status_code == 200, response.text
                assert event_types(response.text)[-1] == "response.completed"
            served_by = {stack.label_of(r["account_id"]) for r in await stack.upstream_requests()}
            assert len(served_by - {victim}) == 2, served_by

            # The in-flight stream does not belong to the actor (the relay and the upstream
            # connection are the handler's), so it completes, in full.
            assert stream["status"] == 200
            events = stream["events"]
            assert events[0]["type"] == "response.created"
            assert events[-1]["type"] == "response.completed"
            assert text_of(events) == completed_text(events[-1])
            assert text_of(events).startswith("survives")
            status, outcome = await wait_for_log(
                stack, stream["request_id"], "status_code", "outcome"
            )
            assert (status, outcome) == (200, "completed")

            # The restarted actor serves again, and its conversation still sticks to it.
            await stack.control("POST", "reset")
            body = responses_body(prompt_cache_key="victim-conversation")
            response = await client.post(RESPONSES, json=body)
            assert response.status_code == 200
            assert event_types(response.text)[-1] == "response.completed"
            served = (await stack.upstream_requests())[-1]
            assert stack.label_of(served["account_id"]) == victim
            assert supervisor.crashes == 1


# --- 2. stalled upstreams are cut by their deadlines ---------------------------------------


async def test_stalled_upstream_fails_over_then_every_account_stalled_is_a_clear_error(
    db_url: str, tmp_path: Path
) -> None:
    settings = GatewaySettings(upstream_first_byte_timeout_s=1.0)
    async with open_stack(db_url, tmp_path, settings=settings) as stack, stack.client() as client:
        with trio.fail_after(20):
            stalled = await pinned_account(stack, client, "stalled-conversation")
            await stack.fault(stalled, "stall", times=1)
            body = responses_body(prompt_cache_key="stalled-conversation")
            began = time.monotonic()
            response = await client.post(RESPONSES, json=body)
            elapsed = time.monotonic() - began
            assert response.status_code == 200, response.text
            assert event_types(response.text)[-1] == "response.completed"
            assert 1.0 <= elapsed < 3.0, elapsed
            tail = (await stack.upstream_requests())[-2:]
            assert [r["fault"] for r in tail] == ["stall", None]
            assert stack.label_of(tail[0]["account_id"]) == stalled
            assert stack.label_of(tail[1]["account_id"]) != stalled
            retries, error_code = await wait_for_log(
                stack, response.headers["x-request-id"], "retries", "error_code"
            )
            assert (retries, error_code) == (1, None)

            # Every account stalls: each attempt is cut after 1 s, then a clear error.
            for account in stack.emulator.accounts:
                await stack.fault(account.label, "stall", times=100)
            began = time.monotonic()
            response = await client.post(RESPONSES, json=responses_body())
            elapsed = time.monotonic() - began
        budget = stack.gateway.pool_policy(
            next(iter(stack.gateway.pool_supervisor.pools))
        ).retry_budget
        assert elapsed < (1 + budget) * 1.0 + 1.5, elapsed
        assert response.status_code in (502, 503), response.text
        assert response.headers["content-type"].startswith("application/json")
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code", "param"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["code"]
        status, outcome, logged_code = await wait_for_log(
            stack, response.headers["x-request-id"], "status_code", "outcome", "error_code"
        )
        assert (status, outcome, logged_code) == (response.status_code, "rejected", error["code"])
        # Every stalled upstream connection was closed when its deadline passed.
        assert all(h.upstream.active_connections == 0 for h in accounts(stack))


async def test_idle_deadline_mid_stream_ends_with_response_failed(
    db_url: str, tmp_path: Path
) -> None:
    settings = GatewaySettings(upstream_idle_timeout_s=0.3)
    async with open_stack(db_url, tmp_path, settings=settings) as stack, stack.client() as client:
        # The upstream answers its head at once, then waits 1 s before each event.
        body = responses_body(client_metadata=slow(4, 1000))
        with trio.fail_after(5):
            began = time.monotonic()
            response = await client.post(RESPONSES, json=body)
            elapsed = time.monotonic() - began
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert [e["type"] for e in events] == ["response.failed"]
        assert events[0]["response"]["error"]["code"] == "stream_idle_timeout"
        assert elapsed < 1.0, elapsed  # cut at the idle deadline, not after the first event
        status, outcome, error_code = await wait_for_log(
            stack, response.headers["x-request-id"], "status_code", "outcome", "error_code"
        )
        assert (status, outcome, error_code) == (200, "stream_failed", "stream_idle_timeout")
        assert all(h.upstream.active_connections == 0 for h in accounts(stack))


# --- 3. the upstream drops the connection mid-stream ----------------------------------------


async def test_mid_stream_disconnect_fails_a_stream_but_not_a_collected_answer(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            cut = await pinned_account(stack, client, "cut-conversation")
            await stack.control("POST", "reset")

            # Streaming: the partial events reached the client, so no replay elsewhere.
            await stack.fault(cut, "disconnect_mid_stream", times=1)
            body = responses_body(
                "Reply with exactly: partial", prompt_cache_key="cut-conversation"
            )
            response = await client.post(RESPONSES, json=body)
            assert response.status_code == 200
            types = event_types(response.text)
            assert types[0] == "response.created"
            assert types[-1] == "response.failed"
            assert "response.completed" not in types
            assert len(types) > 1  # the partial events came first
            upstream = await stack.upstream_requests()
            assert len(upstream) == 1 and stack.label_of(upstream[0]["account_id"]) == cut
            status, outcome, error_code = await wait_for_log(
                stack, response.headers["x-request-id"], "status_code", "outcome", "error_code"
            )
            assert (status, outcome) == (200, "stream_failed")
            assert error_code in ("upstream_stream_broken", "upstream_stream_closed")

            # Not streaming: nothing reached the client yet, so another account answers.
            await stack.control("POST", "reset")
            await stack.fault(cut, "disconnect_mid_stream", times=1)
            body = responses_body(
                "Reply with exactly: collected", prompt_cache_key="cut-conversation"
            )
            body.pop("stream")
            response = await client.post(RESPONSES, json=body)
            assert response.status_code == 200, response.text
            payload = response.json()
            assert payload["status"] == "completed"
            assert text_of_output(payload) == "collected"
            upstream = await stack.upstream_requests()
            assert [r["fault"] for r in upstream] == ["disconnect_mid_stream", None]
            assert stack.label_of(upstream[0]["account_id"]) == cut
            assert stack.label_of(upstream[1]["account_id"]) != cut
            retries, outcome = await wait_for_log(
                stack, response.headers["x-request-id"], "retries", "outcome"
            )
            assert (retries, outcome) == (1, "completed")


def text_of_output(payload: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in payload["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


# --- 4. the client leaves mid-stream --------------------------------------------------------


async def test_client_disconnect_cancels_the_upstream_request(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        async with stack.client() as client:
            with trio.fail_after(10):
                label = await pinned_account(stack, client, "leaving-conversation")
        account_id = (await stack.account_ids())[label]
        handle = stack.gateway.pool_supervisor.accounts[account_id]

        async def used_percent() -> float:
            found = (await stack.control("GET", "accounts"))["accounts"]
            return float(next(a["primary_used_percent"] for a in found if a["label"] == label))

        charged_before = await used_percent()
        # 12 deltas, 100 ms before each event: the whole stream would take ~1.9 s.
        body = responses_body(
            prompt_cache_key="leaving-conversation", client_metadata=slow(12, 100)
        )
        with trio.fail_after(10):
            async with (
                stack.client() as client,
                client.stream("POST", RESPONSES, json=body) as response,
            ):
                assert response.status_code == 200
                request_id = response.headers["x-request-id"]
                seen = ""
                async for chunk in response.aiter_text():
                    seen += chunk
                    if "response.output_text.delta" in seen:
                        break  # leave: the client closes its connection mid-stream
                assert handle.upstream.active_connections == 1
                assert handle.snapshot.in_flight == 1
            left_at = time.monotonic()

            # The gateway notices, closes its upstream connection and releases the lease,
            # promptly; the request is logged as the client's disconnect.
            while handle.upstream.active_connections or handle.snapshot.in_flight:
                await trio.sleep(0.01)
            assert time.monotonic() - left_at < 0.5
            status, outcome = await wait_for_log(stack, request_id, "status_code", "outcome")
            assert (status, outcome) == (499, "client_disconnected")

            # The emulator charges an account only as it sends `response.completed`: past
            # the time the whole stream would have taken, it still has not.
            await trio.sleep(max(0.0, 2.2 - (time.monotonic() - left_at)))
            assert await used_percent() == charged_before
            upstream = await stack.upstream_requests()
            assert len(upstream) == 2 and upstream[-1]["status"] == 200


# --- 5. the database goes away and comes back -----------------------------------------------


async def listener_pids(stack: Stack) -> list[int]:
    """Backends of this database holding the gateway's LISTEN connection."""
    rows = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE 'LISTEN%'"
        ).fetchall()
    )
    return [pid for (pid,) in rows]


async def key_works(stack: Stack, raw_key: str) -> bool:
    async with stack.client(headers={"Authorization": f"Bearer {raw_key}"}) as client:
        return (await client.post(RESPONSES, json=responses_body())).status_code == 200


async def new_key(stack: Stack, name: str) -> str:
    raw, _ = await stack.database.run(
        lambda conn: create_key(conn, stack.config.secret_key, POOL, name)
    )
    return str(raw)


async def test_database_outage_loses_no_log_row(pg_data_dir: Path, tmp_path: Path) -> None:
    # A private embedded server (this test stops it), removed by the fixture afterwards.
    url = await trio.to_thread.run_sync(start_embedded_postgres, pg_data_dir)
    await trio.to_thread.run_sync(migrate, url)
    async with open_stack(url, tmp_path) as stack, stack.client() as client:
        await _ride_out_an_outage(stack, client, pg_data_dir)


async def _ride_out_an_outage(stack: Stack, client: httpx.AsyncClient, pg_dir: Path) -> None:
    count = 5
    writer = stack.gateway.log_writer
    with trio.fail_after(10):
        await pinned_account(stack, client, "before-outage")
        await stack.wait_for_logs(1)
        assert await listener_pids(stack)
    await trio.to_thread.run_sync(stop_embedded_postgres, pg_dir)

    request_ids = []
    with trio.fail_after(10):
        for i in range(count):  # no request waits on the database
            began = time.monotonic()
            body = responses_body(prompt_cache_key=f"outage-{i}")
            response = await client.post(RESPONSES, json=body)
            assert response.status_code == 200, response.text
            assert event_types(response.text)[-1] == "response.completed"
            assert time.monotonic() - began < 1.0
            request_ids.append(response.headers["x-request-id"])
    with trio.fail_after(15):  # a batch fails once the pool's acquire timeout (5 s) passes
        while not (writer.failed_batches > 0 and writer.pending == count):
            await trio.sleep(0.05)
    assert writer.dropped == 0

    await trio.to_thread.run_sync(start_embedded_postgres, pg_dir)
    with trio.fail_after(20):
        while writer.pending:
            await trio.sleep(0.05)
    rows = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT request_id, count(*) FROM request_logs GROUP BY request_id"
        ).fetchall()
    )
    logged = dict(rows)
    assert len(logged) == count + 1
    assert all(logged[request_id] == 1 for request_id in request_ids)
    attempts = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT count(*) FROM request_attempts WHERE request_id = ANY(%s)", (request_ids,)
        ).fetchone()[0]
    )
    assert attempts == count
    assert writer.dropped == 0

    # The configuration listener came back too: a change made now reaches the gateway.
    with trio.fail_after(15):
        while not await listener_pids(stack):
            await trio.sleep(0.05)
        raw_key = await new_key(stack, "after-outage")
        while not await key_works(stack, raw_key):
            await trio.sleep(0.05)


async def test_config_change_while_the_listener_reconnects_is_not_lost(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(10):
            [listener] = await listener_pids(stack)
            await stack.database.run(
                lambda conn: conn.execute("SELECT pg_terminate_backend(%s)", (listener,))
            )
            while await listener_pids(stack):
                await trio.sleep(0.005)
            # The listener backs off (0.2 s) before it reconnects; a key created meanwhile
            # is announced to nobody, so the gateway must reload once it is back.
            raw_key = await new_key(stack, "while-reconnecting")
            if await listener_pids(stack):
                pytest.skip("the listener came back before the NOTIFY: nothing to show")
            while not await listener_pids(stack):
                await trio.sleep(0.01)
        with trio.move_on_after(1.5):  # a reload takes ~50 ms once it is asked for
            while not await key_works(stack, raw_key):
                await trio.sleep(0.05)
        assert await key_works(stack, raw_key), "the gateway never reloaded its keys"


# --- 6. no task outlives the stack ----------------------------------------------------------


async def test_no_task_thread_or_socket_outlives_the_stack(db_url: str, tmp_path: Path) -> None:
    tasks, fds = task_count(), open_fds()
    started: list[str] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as clients:  # clients outlive the stack
            async with open_stack(db_url, tmp_path) as stack:

                async def request(body: dict[str, Any]) -> None:
                    with contextlib.suppress(httpx.HTTPError):
                        async with (
                            stack.client() as client,
                            client.stream("POST", RESPONSES, json=body) as response,
                        ):
                            async for _ in response.aiter_raw():
                                started.append("stream")

                # In flight as the stack closes: a slow stream and a stalled request.
                clients.start_soon(request, responses_body(client_metadata=slow(50, 100)))
                while not started:
                    await trio.sleep(0.02)
                for account in stack.emulator.accounts:
                    await stack.fault(account.label, "stall", times=100)
                clients.start_soon(request, responses_body())
                while not any(r["fault"] == "stall" for r in await stack.upstream_requests()):
                    await trio.sleep(0.02)
                assert task_count() > tasks
            clients.cancel_scope.cancel()
        while task_count() != tasks:
            await trio.sleep(0.01)
    assert [t.name for t in threading.enumerate() if t.name.startswith("pooler")] == []
    assert not open_fds() - fds


async def test_an_account_crashing_past_its_budget_leaves_routing_alone(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        supervisor = stack.gateway.pool_supervisor
        victim_id = next(iter(supervisor.accounts))
        victim = supervisor.accounts[victim_id]
        with trio.fail_after(20):
            for _ in range(7):  # a restart budget of 5 per minute: the 6th crash escalates
                assert await call(
                    supervisor.mailbox, lambda r: m.CrashAccount(victim_id, r), timeout=5
                )
            while supervisor.escalations == 0:
                await trio.sleep(0.02)
        assert not victim.snapshot.alive
        # The PoolSupervisor and every other account go on serving.
        await stack.control("POST", "reset")
        for i in range(6):
            body = responses_body(prompt_cache_key=f"after-escalation-{i}")
            response = await client.post(RESPONSES, json=body)
            assert response.status_code == 200
        served = {r["account_id"] for r in await stack.upstream_requests()}
        victim_upstream = victim.state.chatgpt_account_id
        assert victim_upstream not in served and len(served) == 2
