"""Websocket Responses sessions ended by the gateway: a revoked key, a crashed account."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
import trio
import trio_websocket
from faults.helpers import no_leaks
from harness import Stack, open_stack, responses_body
from test_websocket_responses import (
    auth,
    leased_account,
    log_rows,
    turn,
    wait_admission_idle,
    ws_url,
)

from pooler.actors import messages as m
from pooler.actors.runtime import call
from pooler.store.accounts import delete_account
from pooler.store.keys import revoke_key
from pooler.upstream.ws_client import ClientWebsocket
from pooler.web.settings import GatewaySettings

DEADLINE = 30


async def wait_nothing_in_flight(stack: Stack) -> None:
    handles = list(stack.gateway.pool_supervisor.accounts.values())
    while any(h.snapshot.in_flight for h in handles):
        await trio.sleep(0.02)
    await wait_admission_idle(stack)


async def close_code_on_revoke(stack: Stack, *, mid_turn: bool) -> tuple[int | None, float]:
    """Open a socket (one turn done, or one stalled mid-turn), revoke its key: the close
    code the client sees and how long after the revocation."""
    async with trio_websocket.open_websocket_url(
        ws_url(stack), extra_headers=auth(stack.key)
    ) as ws:
        if mid_turn:
            await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
            while len(await stack.upstream_requests()) < 2:
                await trio.sleep(0.02)
        else:
            events = await turn(ws, **responses_body())
            assert events[-1]["type"] == "response.completed"
        keys = await stack.database.run(
            lambda conn: conn.execute("SELECT key_prefix FROM pool_api_keys").fetchall()
        )
        prefix = next(str(k[0]) for k in keys if stack.key.startswith(str(k[0])))
        revoked_at = trio.current_time()
        await stack.database.run(lambda conn: revoke_key(conn, prefix, actor="test"))
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return (
                closed.reason.code if closed.reason else None,
                trio.current_time() - revoked_at,
            )


async def test_revoking_the_key_closes_its_open_socket_with_1008(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            code, after = await close_code_on_revoke(stack, mid_turn=False)
            assert code == 1008
            assert after < 1.0
            await wait_nothing_in_flight(stack)
        assert stack.gateway.pool_supervisor  # the gateway still serves


async def test_revoking_the_key_mid_turn_logs_the_turn_and_releases(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        for account in stack.emulator.accounts:
            await stack.control(
                "POST",
                "faults",
                {"account_id": str(account.label), "kind": "stall", "stall_seconds": 20},
            )
        with trio.fail_after(DEADLINE):
            code, after = await close_code_on_revoke(stack, mid_turn=True)
            assert code == 1008
            assert after < 1.0
            await stack.wait_for_logs(1)
            await wait_nothing_in_flight(stack)
        rows = await log_rows(stack)
        assert [(r[0], r[2]) for r in rows] == [("websocket", "stream_failed")]


async def close_code_on_crash(stack: Stack) -> tuple[int | None, str]:
    """One turn on a socket, then crash its account's actor: the client's close code, and
    the account."""
    async with trio_websocket.open_websocket_url(
        ws_url(stack), extra_headers=auth(stack.key)
    ) as ws:
        events = await turn(ws, **responses_body())
        assert events[-1]["type"] == "response.completed"
        victim = leased_account(stack)
        supervisor = stack.gateway.pool_mailbox
        assert await call(supervisor, lambda r: m.CrashAccount(victim, r), timeout=5)
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None, victim


async def test_account_actor_crash_closes_its_socket_with_1011(db_url: str, tmp_path: Path) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            code, victim = await close_code_on_crash(stack)
            assert code == 1011
            await wait_nothing_in_flight(stack)
            handle = stack.gateway.pool_supervisor.accounts[victim]
            assert handle.stats.crashes == 1
            while not handle.snapshot.alive:  # restarted, and serving again
                await trio.sleep(0.02)
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
            await wait_nothing_in_flight(stack)
            del ws


async def test_upstream_is_pinged_and_the_session_stays_up(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[float] = []
    original = ClientWebsocket.ping

    async def counting_ping(self: ClientWebsocket) -> None:
        await original(self)  # the emulator's server answers with a pong
        pings.append(trio.current_time())

    monkeypatch.setattr(ClientWebsocket, "ping", counting_ping)
    settings = GatewaySettings(websocket_ping_interval_s=0.1)
    async with open_stack(db_url, tmp_path, settings=settings) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                await trio.sleep(0.55)
                assert len(pings) >= 3
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
            await wait_nothing_in_flight(stack)


async def test_a_missing_pong_closes_the_session_with_1011(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unanswered_ping(self: ClientWebsocket) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(ClientWebsocket, "ping", unanswered_ping)
    settings = GatewaySettings(websocket_ping_interval_s=0.1)
    async with open_stack(db_url, tmp_path, settings=settings) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed as closed:
                    assert closed.reason is not None and closed.reason.code == 1011
            await wait_nothing_in_flight(stack)


async def test_removing_the_account_closes_its_socket_with_1012(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
                victim = leased_account(stack)
                await stack.database.run(
                    lambda conn: delete_account(conn, UUID(victim), actor="test")
                )
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1012
            assert victim not in stack.gateway.pool_supervisor.accounts
            # The session's next connection is served by an account still in the Pool.
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
            await wait_nothing_in_flight(stack)
            del ws, closed  # a trio-websocket client leaves its closed stream to the collector
