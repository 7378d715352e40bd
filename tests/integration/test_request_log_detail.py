"""What a request-log row and its attempts record for the detail page (issue 14): each
attempt's time to first byte and status, the routing story (strategy, candidates and their
verdicts, continuity and why it moved), the client's own request id, the client's address
under the trusted-proxy rules, and the bytes each way, for HTTP, `/v1` and websocket turns.
Checked against what the emulator saw and what the client sent and received."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import trio
import trio_websocket
import zstandard
from harness import open_stack, parse_sse, responses_body
from routing_support import (
    RESPONSES,
    arm,
    attempt_rows,
    completed,
    log_row,
    pause,
    post,
    seen,
    set_instance_settings,
)

from pooler.store.text import storable

DEADLINE = 30
CHAT = "/v1/chat/completions"


def verdicts(row: dict[str, Any]) -> dict[str, str]:
    routing = row["routing"]
    return {c["label"]: c["verdict"] for c in routing["candidates"]}


async def test_failover_records_both_attempts_and_the_routing_story(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            first = await post(client, responses_body(prompt_cache_key="conv-f"))
            completed(first)
            [served] = await seen(stack)
            pinned = served["label"]
            row = await log_row(stack, first.headers["x-request-id"])
            assert row["routing"]["continuity"] == "new"
            assert verdicts(row)[pinned] == "chosen"
            assert (
                row["routing"]["strategy"]
                == stack.gateway.pool_policy(str(row["pool_id"])).strategy
            )

            # The pinned account fails with a 500: the request moves to another account.
            await arm(stack, pinned, "server_error_500")
            response = await post(client, responses_body(prompt_cache_key="conv-f"))
            completed(response)
            tail = (await seen(stack))[-2:]
            assert (tail[0]["label"], tail[0]["status"]) == (pinned, 500)
            assert tail[1]["status"] == 200
            moved_to = tail[1]["label"]
            request_id = response.headers["x-request-id"]
            row = await log_row(stack, request_id)
            attempts = await attempt_rows(stack, request_id)

        assert [(a["account_label"], a["status_code"]) for a in attempts] == [
            (pinned, 500),
            (moved_to, 200),
        ]
        for attempt in attempts:
            assert attempt["ttfb_ms"] is not None
            assert 0 <= attempt["ttfb_ms"] <= attempt["duration_ms"]
        # Each attempt ends within its request (the serving one ends with it).
        assert sum(a["duration_ms"] for a in attempts) <= row["duration_ms"]
        code = attempts[0]["error_code"]
        assert code  # the upstream's own error code for its 500
        routing = row["routing"]
        assert routing["candidates"][:2] == [
            {"label": pinned, "verdict": code},
            {"label": moved_to, "verdict": "chosen"},
        ]
        assert (routing["continuity"], routing["continuity_reason"]) == ("moved", code)
        assert (row["continuity"], row["account_label"]) == ("moved", moved_to)
        assert row["exclusions"] == {pinned: code}  # kept as before
        labels = {a.label for a in stack.emulator.accounts}
        assert set(verdicts(row)) <= labels


async def test_a_continuity_move_records_why(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            completed(await post(client, responses_body(prompt_cache_key="conv-m")))
            [served] = await seen(stack)
            kept = await post(client, responses_body(prompt_cache_key="conv-m"))
            completed(kept)
            row = await log_row(stack, kept.headers["x-request-id"])
            assert row["routing"]["continuity"] == "kept"
            assert "continuity_reason" not in row["routing"]

            await pause(stack, served["label"])
            moved = await post(client, responses_body(prompt_cache_key="conv-m"))
            completed(moved)
            row = await log_row(stack, moved.headers["x-request-id"])
        routing = row["routing"]
        assert (routing["continuity"], routing["continuity_reason"]) == ("moved", "not_active")
        story = verdicts(row)
        assert story[served["label"]] == "not_active"
        assert story[row["account_label"]] == "chosen"
        assert len(await attempt_rows(stack, moved.headers["x-request-id"])) == 1


async def test_v1_chat_records_bytes_and_the_client_request_id(db_url: str, tmp_path: Path) -> None:
    body = json.dumps(
        {"model": "gpt-5.5", "messages": [{"role": "user", "content": "Reply with exactly: ok"}]}
    ).encode()
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            headers = {"content-type": "application/json", "X-Client-Request-Id": "chat-1"}
            answer = await client.post(CHAT, content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            streamed = await client.post(
                CHAT,
                content=json.dumps({**json.loads(body), "stream": True}).encode(),
                headers={**headers, "X-Client-Request-Id": "chat-2"},
            )
            assert streamed.status_code == 200
            # A zstd body is counted as received, before it is decoded.
            packed = zstandard.ZstdCompressor().compress(json.dumps(responses_body()).encode())
            zstd = await client.post(
                RESPONSES,
                content=packed,
                headers={"content-type": "application/json", "content-encoding": "zstd"},
            )
            completed(zstd)
            rows = [
                await log_row(stack, r.headers["x-request-id"]) for r in (answer, streamed, zstd)
            ]
            attempts = await attempt_rows(stack, answer.headers["x-request-id"])
        assert [r["client_request_id"] for r in rows] == ["chat-1", "chat-2", None]
        assert [r["request_bytes"] for r in rows] == [
            len(body),
            len(json.dumps({**json.loads(body), "stream": True}).encode()),
            len(packed),
        ]
        assert [r["response_bytes"] for r in rows] == [
            len(answer.content),
            len(streamed.content),
            len(zstd.content),
        ]
        assert [r["client_ip"] for r in rows] == ["127.0.0.1"] * 3
        assert attempts[0]["status_code"] == 200 and attempts[0]["ttfb_ms"] is not None
        assert attempts[0]["duration_ms"] <= rows[0]["duration_ms"]
        assert verdicts(rows[0])[rows[0]["account_label"]] == "chosen"


async def test_a_websocket_turn_records_bytes_and_the_client_request_id(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        url = str(stack.url).replace("http://", "ws://") + RESPONSES
        headers = [
            (b"authorization", f"Bearer {stack.key}".encode()),
            (b"x-client-request-id", b"thread-ws-1"),
        ]
        sent: list[int] = []
        received: list[int] = []
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                for text in ("one", "two"):
                    frame = json.dumps(
                        {"type": "response.create", **responses_body(f"Reply with exactly: {text}")}
                    )
                    await ws.send_message(frame)
                    sent.append(len(frame.encode()))
                    size = 0
                    while True:
                        message = await ws.get_message()
                        size += len(message.encode() if isinstance(message, str) else message)
                        if json.loads(message)["type"] == "response.completed":
                            break
                    received.append(size)
            await stack.wait_for_logs(2)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT client_request_id, request_bytes, response_bytes, client_ip, routing,"
                " account_label FROM request_logs WHERE transport = 'websocket'"
                " ORDER BY created_at"
            ).fetchall()
        )
    assert [r[0] for r in rows] == ["thread-ws-1"] * 2
    assert [r[1] for r in rows] == sent
    # The first turn's bytes include the codex.rate_limits frame relayed before it.
    assert [r[2] for r in rows] == received
    assert all(r[3] == "127.0.0.1" for r in rows)
    for row in rows:
        routing = row[4]
        assert {"label": row[5], "verdict": "chosen"} in routing["candidates"]
        assert routing["continuity"] in ("new", "none")


async def test_client_ip_believes_forwarded_for_only_from_a_trusted_proxy(
    db_url: str, tmp_path: Path
) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            untrusted = await post(client, None, **forwarded)
            completed(untrusted)
            await set_instance_settings(stack, trusted_proxies=["127.0.0.1/32"])
            trusted = await post(client, None, **forwarded)
            completed(trusted)
            await set_instance_settings(stack, trusted_proxies=["127.0.0.1/32", "203.0.113.0/24"])
            two_hops = await post(client, None, **forwarded)
            completed(two_hops)
            ips = [
                (await log_row(stack, r.headers["x-request-id"]))["client_ip"]
                for r in (untrusted, trusted, two_hops)
            ]
    assert ips == ["127.0.0.1", "203.0.113.7", "198.51.100.9"]


def raw_request(url: str, request: bytes) -> bytes:
    """One HTTP/1.1 request written as raw bytes (a header no client library would send);
    the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_hostile_client_request_id_is_stored_escaped_and_bounded(
    db_url: str, tmp_path: Path
) -> None:
    # C1 controls (an escape sequence's CSI), a tab, a right-to-left override's bytes; 10 KB.
    hostile = b"\x9b31m\tEVIL\x85\xe2\x80\xae" + b"A" * 10_240
    body = json.dumps(responses_body()).encode()
    async with open_stack(db_url, tmp_path) as stack:
        request = (
            b"POST " + RESPONSES.encode() + b" HTTP/1.1\r\nhost: gateway\r\n"
            b"authorization: Bearer " + stack.key.encode() + b"\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"x-client-request-id: " + hostile + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with trio.fail_after(DEADLINE):
            answer = await trio.to_thread.run_sync(raw_request, stack.url, request)
            head, _, _ = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            request_id = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"x-request-id:")
            )
            row = await log_row(stack, request_id)
            # The next honest request is served and logged as usual.
            async with stack.client() as client:
                honest = await post(client, None, **{"x-client-request-id": "honest-1"})
                completed(honest)
                honest_row = await log_row(stack, honest.headers["x-request-id"])
    stored = row["client_request_id"]
    assert stored == storable(hostile.decode("latin-1")[:200])
    assert len(stored) == 200 and stored.isprintable()
    assert stored.startswith("\\x9b31m\\x09EVIL\\x85")
    assert row["status_code"] == 200 and row["error_code"] is None  # the whole row, kept
    assert honest_row["client_request_id"] == "honest-1"


async def test_sse_response_bytes_match_what_the_client_read(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            response = await client.post(RESPONSES, json=responses_body())
            assert parse_sse(response.text)[-1]["type"] == "response.completed"
            row = await log_row(stack, response.headers["x-request-id"])
            refused = await client.post(
                RESPONSES, content=b'{"model": ', headers={"content-type": "application/json"}
            )
            assert refused.status_code == 400
            refused_row = await log_row(stack, refused.headers["x-request-id"])
    assert row["response_bytes"] == len(response.content)
    assert refused_row["response_bytes"] == len(refused.content)
    assert refused_row["routing"] is None  # refused before any account was asked for
