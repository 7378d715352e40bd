"""Files, transcription and realtime calls through the gateway (protocol §1.8, §1.9):
file affinity to the creating account, relays, request-log rows, and nothing stored."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import POOL, Stack, open_stack, parse_sse, responses_body
from routing_support import log_row
from test_privacy import dump_database, token_strings

from pooler.store.pools import update_pool

FILES = "/backend-api/files"


async def upload_file(stack: Stack, client: httpx.AsyncClient, name: str, data: bytes) -> str:
    """Create through the gateway, PUT to the upload URL, finalize through the gateway."""
    created = await client.post(
        FILES, json={"file_name": name, "file_size": len(data), "use_case": "codex"}
    )
    assert created.status_code == 200, created.text
    file_id, upload_url = created.json()["file_id"], created.json()["upload_url"]
    async with httpx.AsyncClient(timeout=10) as blob:
        put = await blob.put(upload_url, content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201
    done = await client.post(f"{FILES}/{file_id}/uploaded", json={})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "success"
    return str(file_id)


def file_turn(file_id: str, text: str = "Reply with exactly: seen") -> dict[str, Any]:
    body: dict[str, Any] = responses_body(text)
    body["input"][0]["content"].append({"type": "input_file", "file_id": file_id})
    return body


async def log_rows(stack: Stack) -> list[tuple[Any, ...]]:
    return list(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT route, status_code, outcome, account_label FROM request_logs"
                " ORDER BY created_at"
            ).fetchall()
        )
    )


async def test_file_is_finalized_and_used_on_its_creating_account(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            file_ids = [
                await upload_file(stack, client, f"f{i}.txt", b"data-%d" % i) for i in range(4)
            ]
            creators = {
                r["file_id"]: r["account_id"]
                for r in await stack.upstream_requests("/backend-api/files")
            }
            assert len(set(creators.values())) > 1, "the files should land on several accounts"
            finals = await stack.upstream_requests("/uploaded")
            assert [r["status"] for r in finals] == [200] * 4
            for file_id, final in zip(file_ids, finals, strict=True):
                assert final["account_id"] == creators[file_id]
            for file_id in reversed(file_ids):
                response = await client.post(
                    "/backend-api/codex/responses", json=file_turn(file_id)
                )
                assert response.status_code == 200
                assert parse_sse(response.text)[-1]["type"] == "response.completed"
                turn = (await stack.upstream_requests("/codex/responses"))[-1]
                assert turn["account_id"] == creators[file_id]
            # File affinity is not a cache: it holds with the Pool's continuity off.
            await stack.database.run(
                lambda conn: update_pool(conn, POOL, continuity_enabled=False, actor="test")
            )
            await stack.gateway.reload()
            late = await upload_file(stack, client, "late.txt", b"late")
            creator = (await stack.upstream_requests("/backend-api/files"))[-1]["account_id"]
            for _ in range(3):
                response = await client.post("/backend-api/codex/responses", json=file_turn(late))
                assert response.status_code == 200
                turn = (await stack.upstream_requests("/codex/responses"))[-1]
                assert turn["account_id"] == creator
            # An unknown file cannot be finalized (nothing pins it; the upstream says 404).
            missing = await client.post(f"{FILES}/file_unknown/uploaded", json={})
            assert missing.status_code == 404
            await stack.wait_for_logs((4 + 1) * 2 + 4 + 3 + 1)
        rows = await log_rows(stack)
        files_rows = [r for r in rows if r[0] == "files"]
        assert len(files_rows) == 11  # five files created and finalized, one unknown
        assert all(r[3] is not None for r in files_rows)


async def test_transcribe_and_realtime_calls_are_relayed(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
            answer = await client.post("/backend-api/transcribe", files=files, data={"prompt": "p"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["text"].startswith("emulated transcription")
            call = await client.post(
                "/backend-api/codex/realtime/calls",
                json={"sdp": "v=0\r\n", "session": {"type": "realtime"}},
            )
            assert call.status_code == 201, call.text
            assert call.headers["content-type"] == "application/sdp"
            assert call.headers["location"].rsplit("/", 1)[1].startswith("rtc_")
            assert call.text.startswith("v=0")
            assert len(await stack.upstream_requests("/backend-api/transcribe")) == 1
            assert len(await stack.upstream_requests("/realtime/calls")) == 1
            unauthenticated = await httpx.AsyncClient(base_url=stack.url).post(
                "/backend-api/transcribe", files=files
            )
            assert unauthenticated.status_code == 401
            await stack.wait_for_logs(3)
        rows = await log_rows(stack)
        assert [(r[0], r[1], r[2]) for r in rows if r[0] != "files"][:2] == [
            ("transcribe", 200, "completed"),
            ("realtime_calls", 201, "completed"),
        ]


async def test_transcribe_over_the_size_limit_is_413(db_url: str, tmp_path: Path) -> None:
    from pooler.web.settings import GatewaySettings

    settings = GatewaySettings(max_body_bytes=10_000)
    async with open_stack(db_url, tmp_path, settings=settings) as stack, stack.client() as client:
        with trio.fail_after(20):
            files = {"file": ("a.wav", b"x" * 20_000, "audio/wav")}
            answer = await client.post("/backend-api/transcribe", files=files)
            assert answer.status_code == 413
            assert await stack.upstream_requests("/backend-api/transcribe") == []


async def test_uploaded_bytes_and_audio_are_never_stored_or_logged(
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"privacy-marker-{uuid.uuid4().hex}"
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        secrets = {stack.key} | token_strings(stack)
        with trio.fail_after(30):
            file_id = await upload_file(
                stack, client, f"{marker}-name.txt", f"{marker}-file-bytes".encode()
            )
            response = await client.post("/backend-api/codex/responses", json=file_turn(file_id))
            assert response.status_code == 200
            audio = {"file": (f"{marker}.wav", f"{marker}-audio".encode(), "audio/wav")}
            answer = await client.post(
                "/backend-api/transcribe", files=audio, data={"prompt": f"{marker}-prompt"}
            )
            assert answer.status_code == 200
            call = await client.post(
                "/backend-api/codex/realtime/calls",
                json={"sdp": f"v=0 {marker}-sdp", "session": {"instructions": marker}},
            )
            assert call.status_code == 201
            await stack.wait_for_logs(5)
            await stack.gateway.flush_write_behind()
        assert marker not in repr(list(stack.emulator.requests))
    tables = await trio.to_thread.run_sync(dump_database, db_url)
    assert "request_logs" in tables
    for table, text in tables.items():
        assert marker not in text, f"the marker is stored in {table}"
        assert marker.encode().hex() not in text, f"the marker is stored (bytea) in {table}"
        for secret in secrets:
            assert secret not in text, f"a raw key or token is stored in {table}"
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    assert caplog.records, "nothing was logged at all: the capture is not working"
    assert marker not in logs


async def test_failover_before_the_first_byte_but_not_for_a_pinned_finalize(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        healthy = stack.emulator.accounts[2]
        with trio.fail_after(30):
            # Every account fails once: each is tried in turn before the client hears 502.
            for account in stack.emulator.accounts:
                await stack.fault(account.label, "server_error_500", times=1)
            files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
            answer = await client.post("/backend-api/transcribe", files=files)
            assert answer.status_code == 502, answer.text
            tried = await stack.upstream_requests("/backend-api/transcribe")
            assert [r["status"] for r in tried] == [500, 500, 500]
            assert len({r["account_id"] for r in tried}) == 3
            await stack.control("POST", "reset")

            for account in stack.emulator.accounts[:2]:
                await stack.fault(account.label, "server_error_500", times=20)
            files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
            for _ in range(3):
                answer = await client.post("/backend-api/transcribe", files=files)
                assert answer.status_code == 200, answer.text
                call = await client.post(
                    "/backend-api/codex/realtime/calls", json={"sdp": "v=0", "session": {}}
                )
                assert call.status_code == 201, call.text
                created = await client.post(
                    FILES, json={"file_name": "a", "file_size": 1, "use_case": "codex"}
                )
                assert created.status_code == 200, created.text
            for suffix in ("/backend-api/transcribe", "/realtime/calls", "/backend-api/files"):
                served = [r for r in await stack.upstream_requests(suffix) if r["status"] < 300]
                assert {r["account_id"] for r in served} == {healthy.account_id}

            # The finalize is pinned to the creating account: its 500 is relayed, no failover.
            await stack.control("POST", "reset")
            await stack.fault(healthy.label, "server_error_500", times=1)
            file_id = created.json()["file_id"]
            done = await client.post(f"{FILES}/{file_id}/uploaded", json={})
            assert done.status_code == 500
            finals = await stack.upstream_requests("/uploaded")
            assert [(r["status"], r["account_id"]) for r in finals] == [(500, healthy.account_id)]


async def test_relays_answer_like_responses_when_every_account_is_out_of_quota(
    db_url: str, tmp_path: Path
) -> None:
    """One attempt loop, one ending: every account refusing for its usage limit is a 429
    `usage_limit_reached` with Retry-After (not a 502), and the log row says why."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for account in stack.emulator.accounts:
            await stack.fault(account.label, "usage_limit_429")
        files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
        with trio.fail_after(30):
            answer = await client.post("/backend-api/transcribe", files=files)
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "usage_limit_reached"
        assert int(answer.headers["retry-after"]) >= 1
        tried = await stack.upstream_requests("/backend-api/transcribe")
        assert [r["status"] for r in tried] == [429, 429, 429]
        row = await log_row(stack, answer.headers["x-request-id"])
        assert row["status_code"] == 429
        labels = {str(a.label) for a in stack.emulator.accounts}
        assert row["exclusions"] == dict.fromkeys(labels, "usage_limit_reached")
