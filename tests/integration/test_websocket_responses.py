"""Websocket Responses through the gateway: turns, accounting, refusals, disconnects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from faults.helpers import arm, handle_of, no_leaks, set_instance_settings
from harness import Stack, open_stack, responses_body

from pooler.web.settings import GatewaySettings

DEADLINE = 30


def ws_url(stack: Stack, path: str = "/backend-api/codex/responses") -> str:
    return str(stack.url).replace("http://", "ws://") + path


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode()), (b"session-id", b"sess-ws-test")]


async def turn(ws: trio_websocket.WebSocketConnection, **body: Any) -> list[dict[str, Any]]:
    await ws.send_message(json.dumps({"type": "response.create", **body}))
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in ("response.completed", "error"):
        events.append(json.loads(await ws.get_message()))
    return events


def leased_account(stack: Stack) -> str:
    """The account holding the open socket's lease (the only one with a lease in flight)."""
    accounts = stack.gateway.pool_supervisor.accounts
    return str(next(a for a, h in accounts.items() if h.snapshot.in_flight))


async def log_rows(stack: Stack) -> list[tuple[Any, ...]]:
    return list(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT transport, status_code, outcome, input_tokens, output_tokens, account_id"
                " FROM request_logs ORDER BY created_at"
            ).fetchall()
        )
    )


async def test_two_turns_over_one_websocket_are_each_logged(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                first = await turn(ws, **responses_body("Reply with exactly: one"))
                assert first[0]["type"] == "codex.rate_limits"
                assert first[-1]["type"] == "response.completed"
                follow_up = responses_body("Reply with exactly: two")
                follow_up["previous_response_id"] = first[-1]["response"]["id"]
                second = await turn(ws, **follow_up)
                assert second[-1]["type"] == "response.completed"
                assert second[-2]["item"]["content"][0]["text"] == "two"
            await stack.wait_for_logs(2)
        upstream = await stack.upstream_requests()
        assert {r["transport"] for r in upstream} == {"websocket"}
        assert [r["status"] for r in upstream] == [101, 200, 200]
        rows = await log_rows(stack)
        assert [(r[0], r[1], r[2]) for r in rows] == [("websocket", 200, "completed")] * 2
        assert all(r[3] and r[4] for r in rows)  # usage from each turn's terminal event
        assert len({r[5] for r in rows}) == 1  # one socket, one account
        account = handle_of(stack, str(rows[0][5]))
        with trio.fail_after(5):
            while account.snapshot.in_flight:
                await trio.sleep(0.02)


async def test_v1_alias_serves_websockets(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client():
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack, "/backend-api/codex/v1/responses"), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"


async def test_upstream_426_makes_the_client_fall_back(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        for account in stack.emulator.accounts:
            await stack.fault(str(account.label), "ws_upgrade_426")
        with trio.fail_after(DEADLINE), pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ):
                pass
        assert refused.value.status_code == 426
        assert refused.value.body is not None
        assert json.loads(refused.value.body)["error"]["code"] == "websocket_unsupported"
        # The lease went back: nothing is in flight anywhere.
        for handle in stack.gateway.pool_supervisor.accounts.values():
            with trio.fail_after(5):
                while handle.snapshot.in_flight:
                    await trio.sleep(0.02)


async def test_bad_key_is_refused_on_the_handshake(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE), pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth("cpk_not-a-key")
            ):
                pass
        assert refused.value.status_code == 401
        assert await stack.upstream_requests() == []


async def test_client_disconnect_mid_turn_closes_upstream_and_releases(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        for account in stack.emulator.accounts:
            await arm(stack, str(account.label), "stall", stall_seconds=20)
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                body = {"type": "response.create", **responses_body()}
                await ws.send_message(json.dumps(body))
                while not await stack.upstream_requests():
                    await trio.sleep(0.02)
                while len(await stack.upstream_requests()) < 2:  # the stalled turn
                    await trio.sleep(0.02)
            await stack.wait_for_logs(1)
            handles = list(stack.gateway.pool_supervisor.accounts.values())
            while any(h.snapshot.in_flight for h in handles):
                await trio.sleep(0.02)
        rows = await log_rows(stack)
        assert [(r[0], r[1], r[2]) for r in rows] == [("websocket", 499, "client_disconnected")]
        upstream = await stack.upstream_requests()
        assert [r["status"] for r in upstream] == [101, None]  # the stall never answered


async def close_code_mid_turn(stack: Stack) -> int | None:
    """Start a turn and read until the gateway closes the socket: its close code."""
    async with trio_websocket.open_websocket_url(
        ws_url(stack), extra_headers=auth(stack.key)
    ) as ws:
        await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None


async def test_upstream_failure_closes_the_client_with_1011(db_url: str, tmp_path: Path) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        for account in stack.emulator.accounts:
            await stack.fault(str(account.label), "disconnect_mid_stream")
        with trio.fail_after(DEADLINE):
            assert await close_code_mid_turn(stack) == 1011
            await stack.wait_for_logs(1)
            handles = list(stack.gateway.pool_supervisor.accounts.values())
            while any(h.snapshot.in_flight for h in handles):
                await trio.sleep(0.02)
        rows = await log_rows(stack)
        assert [(r[0], r[1], r[2]) for r in rows] == [("websocket", 200, "stream_failed")]


async def close_code_after_one_turn(stack: Stack) -> int | None:
    """One turn, then wait for the gateway to close the socket: its close code. A helper,
    so the client connection (which waits for the server's TCP close and leaves its socket
    to the collector) is unreferenced once it returns."""
    async with trio_websocket.open_websocket_url(
        ws_url(stack), extra_headers=auth(stack.key)
    ) as ws:
        events = await turn(ws, **responses_body())
        assert events[-1]["type"] == "response.completed"
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None
    raise AssertionError("the socket should have been closed")


async def test_idle_websocket_is_closed(db_url: str, tmp_path: Path) -> None:
    settings = GatewaySettings(websocket_idle_timeout_s=0.5)
    async with no_leaks(), open_stack(db_url, tmp_path, settings=settings) as stack:
        with trio.fail_after(DEADLINE):
            assert await close_code_after_one_turn(stack) == 1000
            handles = list(stack.gateway.pool_supervisor.accounts.values())
            while any(h.snapshot.in_flight for h in handles):
                await trio.sleep(0.02)
        upstream = await stack.upstream_requests()
        assert [r["status"] for r in upstream] == [101, 200]


async def handshake_refusal(stack: Stack, key: str | None = None) -> tuple[int, dict[str, Any]]:
    """Open a socket the gateway is to refuse: the status and JSON body of its answer."""
    try:
        async with trio_websocket.open_websocket_url(
            ws_url(stack), extra_headers=auth(key or stack.key)
        ):
            pass
    except trio_websocket.ConnectionRejected as refused:
        return refused.status_code, json.loads(refused.body or b"{}")
    raise AssertionError("the handshake should have been refused")


async def wait_admission_idle(stack: Stack) -> None:
    while stack.gateway.admission.stats()["websocket"].in_flight:
        await trio.sleep(0.02)


async def test_websocket_bulkhead_full_refuses_the_handshake_with_503(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        await set_instance_settings(
            stack, **{"bulkheads.websocket.concurrency": 1, "bulkheads.websocket.queue": 0}
        )
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
                status, body = await handshake_refusal(stack)
                assert status == 503
                assert body["error"]["code"] == "server_is_overloaded"
            # The slot is given back with the socket: a new one is admitted.
            await wait_admission_idle(stack)
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
            await wait_admission_idle(stack)
            del ws


def headers_with(key: str, **extra: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())] + [
        (name.replace("_", "-").encode(), value.encode()) for name, value in extra.items()
    ]


async def handshake_accounts(stack: Stack) -> list[str]:
    """The upstream account of each websocket handshake the emulator saw, in order."""
    upstream = await stack.upstream_requests()
    return [str(r["account_id"]) for r in upstream if r["status"] == 101]


async def test_two_conversations_go_to_different_accounts(db_url: str, tmp_path: Path) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            first_headers = headers_with(stack.key, session_id="sess-ws-one")
            second_headers = headers_with(stack.key, session_id="sess-ws-two")
            async with (
                trio_websocket.open_websocket_url(ws_url(stack), extra_headers=first_headers) as a,
                trio_websocket.open_websocket_url(ws_url(stack), extra_headers=second_headers) as b,
            ):
                assert (await turn(a, **responses_body()))[-1]["type"] == "response.completed"
                assert (await turn(b, **responses_body()))[-1]["type"] == "response.completed"
            accounts = await handshake_accounts(stack)
            assert len(accounts) == 2
            assert accounts[0] != accounts[1]
            await wait_admission_idle(stack)
            del a, b


async def test_reconnect_with_turn_state_lands_on_the_same_account(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=headers_with(stack.key)
            ) as first:
                assert (await turn(first, **responses_body()))[-1]["type"] == "response.completed"
                turn_state = dict(first.handshake_headers)[b"x-codex-turn-state"].decode()
                # The first socket still holds its account, so least_used alone would pick
                # another one: only the pin brings the reconnect back.
                reconnect = headers_with(stack.key, x_codex_turn_state=turn_state)
                async with trio_websocket.open_websocket_url(
                    ws_url(stack), extra_headers=reconnect
                ) as second:
                    events = await turn(second, **responses_body())
                    assert events[-1]["type"] == "response.completed"
            accounts = await handshake_accounts(stack)
            assert len(accounts) == 2
            assert accounts[0] == accounts[1]
            await wait_admission_idle(stack)
            del first, second


async def test_reconnect_with_the_same_session_lands_on_the_same_account(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            session = headers_with(stack.key, session_id="sess-ws-again")
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=session
            ) as first:
                assert (await turn(first, **responses_body()))[-1]["type"] == "response.completed"
                async with trio_websocket.open_websocket_url(
                    ws_url(stack), extra_headers=session
                ) as second:
                    events = await turn(second, **responses_body())
                    assert events[-1]["type"] == "response.completed"
            accounts = await handshake_accounts(stack)
            assert len(accounts) == 2
            assert accounts[0] == accounts[1]
            await wait_admission_idle(stack)
            del first, second


async def wait_used_percent(handle: Any, at_least: float) -> float:
    """The account snapshot's primary used percent, once it reaches `at_least` (1 s)."""
    with trio.fail_after(1):
        while True:
            primary = handle.snapshot.primary
            if primary is not None and primary.used_percent >= at_least:
                return float(primary.used_percent)
            await trio.sleep(0.01)


async def test_each_turns_quota_evidence_reaches_the_account_while_the_socket_is_open(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                first = await turn(ws, **responses_body())
                assert first[-1]["type"] == "response.completed"
                account_id = leased_account(stack)
                handle = handle_of(stack, account_id)
                label = handle.snapshot.label
                # The next turn's codex.rate_limits event reports 99 %, delivered at its end.
                await stack.control(
                    "POST", "usage", {"account_id": label, "primary_used_percent": 99}
                )
                second = await turn(ws, **responses_body())
                assert second[0]["type"] == "codex.rate_limits"
                assert second[-1]["type"] == "response.completed"
                assert await wait_used_percent(handle, 99) >= 99
                # Now full: the next turn's usage-limit error frame carries headers at 100 %.
                await stack.control(
                    "POST", "usage", {"account_id": label, "primary_used_percent": 100}
                )
                third = await turn(ws, **responses_body())
                assert third[-1]["type"] == "error"
                assert await wait_used_percent(handle, 100) == 100
                # The refusal blocked the account at once, and the gateway ended the socket
                # after relaying it, so that the client's next turn finds another account.
                assert handle.snapshot.blocked_until is not None
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1000
                while handle.snapshot.in_flight:
                    await trio.sleep(0.02)
                before = len(await stack.upstream_requests())
                body = responses_body(prompt_cache_key="elsewhere")
                response = await client.post("/backend-api/codex/responses", json=body)
                assert response.status_code == 200
                after = (await stack.upstream_requests())[before:]
                assert [stack.label_of(r["account_id"]) for r in after] != []
                assert label not in {stack.label_of(r["account_id"]) for r in after}


async def test_a_limit_refusal_moves_the_reconnected_session_to_another_account(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                first = await turn(ws, **responses_body())
                assert first[-1]["type"] == "response.completed"
                refused_id = leased_account(stack)
                await arm(stack, handle_of(stack, refused_id).snapshot.label, "usage_limit_429")
                second = await turn(ws, **responses_body())
                assert second[-1]["type"] == "error"
                assert second[-1]["error"]["code"] == "usage_limit_reached"
            # The same session reconnects (as the CLI does for its next turn): its pin moves.
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                third = await turn(ws, **responses_body())
                assert third[-1]["type"] == "response.completed"
            upgrades = [r for r in await stack.upstream_requests() if r["method"] == "GET"]
            assert len(upgrades) == 2
            assert upgrades[0]["account_id"] != upgrades[1]["account_id"]
            del ws  # a trio-websocket client leaves its closed stream to the collector


async def test_a_401_on_the_upgrade_refreshes_the_token_and_stays_on_the_account(
    db_url: str, tmp_path: Path
) -> None:
    async with no_leaks(), open_stack(db_url, tmp_path) as stack:
        for account in stack.emulator.accounts:
            await stack.fault(str(account.label), "ws_upgrade_401")
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
        upgrades = [r for r in await stack.upstream_requests() if r["method"] == "GET"]
        assert [r["status"] for r in upgrades] == [401, 101]
        assert upgrades[0]["account_id"] == upgrades[1]["account_id"]
        refreshes = await stack.upstream_requests("/oauth/token")
        assert len(refreshes) == 1
        del ws


async def test_a_permessage_deflate_offer_is_declined(db_url: str, tmp_path: Path) -> None:
    """The Codex CLI offers compression; each compressed socket would keep zlib state for
    its life, so the gateway answers the upgrade without the extension."""
    async with open_stack(db_url, tmp_path) as stack:
        port = int(str(stack.url).rsplit(":", 1)[1])
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                request = (
                    "GET /backend-api/codex/responses HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                    f"Authorization: Bearer {stack.key}\r\n\r\n"
                )
                await stream.send_all(request.encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(4096)
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").lower().split("\r\n")
        assert lines[0].startswith("http/1.1 101")
        assert not [line for line in lines if line.startswith("sec-websocket-extensions")]


async def test_v1_websocket_serves_public_clients_without_codex_frames(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(
                ws_url(stack, "/v1/responses"), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body("Reply with exactly: public"))
        assert events[0]["type"] == "response.created"
        assert not [e for e in events if e["type"].startswith("codex.")]
        assert events[-1]["type"] == "response.completed"
        assert {r["transport"] for r in await stack.upstream_requests()} == {"websocket"}
