"""What is never stored (DESIGN §3): after traffic carrying a unique marker everywhere a
client can put one, no table and no log line holds the marker, the raw Pool key or any
upstream token, current or rotated."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from harness import Stack, open_stack, parse_sse, responses_body
from psycopg import sql

RESPONSES = "/backend-api/codex/responses"


def marked_body(marker: str, *, stream: bool = True) -> dict[str, Any]:
    """A turn with the marker in the user text, a tool output, the instructions, the
    prompt cache key and a file name."""
    body = responses_body(
        instructions=f"You are a careful assistant ({marker}-instructions).",
        prompt_cache_key=f"{marker}-cache-key",
    )
    body["input"] = [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": f"Reply with exactly: {marker}-user-text"},
                {
                    "type": "input_file",
                    "filename": f"{marker}-report.pdf",
                    "file_data": "data:application/pdf;base64,JVBERi0xLjQK",
                },
            ],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "exec_command",
            "arguments": json.dumps({"cmd": f"cat {marker}-secret.txt"}),
        },
        {"type": "function_call_output", "call_id": "call_1", "output": f"{marker}-tool-output"},
    ]
    if not stream:
        body.pop("stream")
    return body


# The client's own request id is metadata the request log keeps (the detail page shows it),
# like the user agent: an id, never content.
CLIENT_REQUEST_ID = "0b9c5e2a-privacy-thread"


def marked_headers(marker: str) -> dict[str, str]:
    return {
        "session-id": f"{marker}-session",
        "x-codex-turn-metadata": json.dumps({"turn_id": f"{marker}-turn", "cwd": f"/{marker}"}),
        "x-client-request-id": CLIENT_REQUEST_ID,
    }


def token_strings(stack: Stack) -> set[str]:
    """Every upstream token the emulator holds now, and the claims part of each JWT."""
    found: set[str] = set()
    for account in stack.emulator.accounts:
        tokens = account.tokens
        for token in (tokens.access_token, tokens.id_token, tokens.refresh_token):
            found.add(token)
            parts = token.split(".")
            if len(parts) == 3:
                found.add(parts[1])
    return found


def dump_database(db_url: str) -> dict[str, str]:
    """Every row of every table in the public schema, as text, by table."""
    with psycopg.connect(db_url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                " ORDER BY table_name"
            ).fetchall()
        ]
        out = {}
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier("public", table))
            out[table] = "\n".join(row[0] for row in conn.execute(query).fetchall())
        return out


async def send_traffic(stack: Stack, marker: str) -> set[str]:
    """Streaming, non-streaming, failover, token refresh and error cases; returns the
    request ids the gateway answered with."""
    ids: set[str] = set()
    headers = marked_headers(marker)
    async with stack.client(headers=headers) as client:

        async def post(body: Any, **kwargs: Any) -> Any:
            response = await client.post(RESPONSES, json=body, **kwargs)
            ids.add(response.headers["x-request-id"])
            return response

        # Streaming, then the same conversation without streaming (it sticks to an account).
        response = await post(marked_body(marker))
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert events[-1]["type"] == "response.completed"
        assert marker in response.text  # the completion carries it too
        pinned = stack.label_of((await stack.upstream_requests())[-1]["account_id"])
        response = await post(marked_body(marker, stream=False))
        assert response.status_code == 200 and marker in response.text

        # Failover: the pinned account fails with a 500, another account answers.
        await stack.fault(pinned, "server_error_500", times=1)
        response = await post(marked_body(marker))
        assert parse_sse(response.text)[-1]["type"] == "response.completed"
        tail = (await stack.upstream_requests())[-2:]
        assert [r["status"] for r in tail] == [500, 200]
        pinned = stack.label_of(tail[-1]["account_id"])  # the conversation moved there

        # A 401 makes the gateway refresh the account's tokens (rotation) and retry.
        await stack.control("POST", "reset")
        await stack.fault(pinned, "unauthorized_401", times=1)
        response = await post(marked_body(marker, stream=False))
        assert response.status_code == 200
        assert [(r["status"], r["token_fresh"]) for r in await stack.upstream_requests()] == [
            (401, False),
            (200, True),
        ]

        # Errors: an upstream 400 relayed, invalid JSON, a streaming upstream failure.
        response = await post({**marked_body(marker), "store": True})
        assert response.status_code == 400
        response = await client.post(
            RESPONSES,
            content=f'{{"model": "gpt-5.5", "input": "{marker}-broken',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        ids.add(response.headers["x-request-id"])
        await stack.fault(pinned, "disconnect_mid_stream", times=1)
        response = await post(marked_body(marker))
        assert parse_sse(response.text)[-1]["type"] == "response.failed"

    # A wrong key carrying the marker, and a request with every account failing.
    async with stack.client(headers={**headers, "Authorization": f"Bearer sk-{marker}"}) as bad:
        assert (await bad.post(RESPONSES, json=marked_body(marker))).status_code == 401
    for account in stack.emulator.accounts:
        await stack.fault(account.label, "server_error_500", times=10)
    async with stack.client(headers=headers) as client:
        response = await client.post(RESPONSES, json=marked_body(marker))
        assert response.status_code == 502
        ids.add(response.headers["x-request-id"])
    return ids


# A routing story holds account labels and the gateway's (or the upstream's) codes only.
CODE = re.compile(r"[a-z0-9_]+( [a-z0-9_]+)*|skipped: [a-z ]+")


def check_detail_columns(db_url: str, request_ids: set[str], labels: set[str]) -> None:
    """The columns of the request-log detail page were filled by the traffic (so the dump
    above covered them) and hold metadata only: sizes, the client's id and address, and a
    routing story of labels and codes."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT request_id, client_request_id, client_ip, request_bytes, response_bytes,"
            " routing FROM request_logs"
        ).fetchall()
        ttfbs = conn.execute("SELECT ttfb_ms FROM request_attempts").fetchall()
    by_id = {row[0]: row[1:] for row in rows}
    assert request_ids <= set(by_id)
    for request_id in request_ids:
        client_request_id, client_ip, sent, answered, routing = by_id[request_id]
        assert client_request_id == CLIENT_REQUEST_ID
        assert client_ip == "127.0.0.1"
        assert isinstance(sent, int) and sent > 0
        assert isinstance(answered, int) and answered > 0
        if routing is None:
            continue  # refused before an account was asked for
        assert set(routing) <= {"strategy", "candidates", "more", "continuity", "continuity_reason"}
        assert CODE.fullmatch(routing["strategy"])
        for candidate in routing["candidates"]:
            assert set(candidate) == {"label", "verdict"}
            assert candidate["label"] in labels
            assert CODE.fullmatch(candidate["verdict"]), candidate
        assert CODE.fullmatch(routing.get("continuity_reason", "none"))
    assert sum(1 for (_, _, _, _, _, routing) in rows if routing) >= 5
    assert ttfbs and all(ttfb is not None for (ttfb,) in ttfbs)


async def test_no_prompt_key_or_token_is_stored_or_logged(
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"privacy-marker-{uuid.uuid4().hex}"
    async with open_stack(db_url, tmp_path) as stack:
        secrets = {stack.key} | token_strings(stack)
        with trio.fail_after(30):
            request_ids = await send_traffic(stack, marker)
            rotated = token_strings(stack) - secrets
            assert rotated, "no token was rotated"
            secrets |= rotated
            await stack.wait_for_logs(len(request_ids))
            await stack.gateway.flush_quota()
    # The stack is closed (whatever it writes on the way out is written): dump it all.
    tables = await trio.to_thread.run_sync(dump_database, db_url)
    assert {"account_secrets", "pool_api_keys", "request_logs", "audit_events"} <= set(tables)
    assert all(request_id in tables["request_logs"] for request_id in request_ids)
    for table, text in tables.items():
        assert marker not in text, f"the marker is stored in {table}"
        assert marker.encode().hex() not in text, f"the marker is stored (bytea) in {table}"
        for secret in secrets:
            assert secret not in text, f"a raw key or token is stored in {table}"
            assert secret.encode().hex() not in text, f"a key or token (bytea) in {table}"

    check_detail_columns(db_url, request_ids, {a.label for a in stack.emulator.accounts})

    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    assert caplog.records, "nothing was logged at all: the capture is not working"
    assert marker not in logs
    for secret in secrets:
        assert secret not in logs, "a raw key or token was logged"
