"""`/v1/files`, `/v1/audio/transcriptions` and `/v1/usage` through the real gateway, the
emulator and Postgres: a file lands on one account and requests naming it follow it there;
file metadata is per Pool; no byte of a file or of audio is stored or logged; usage counts
this key's traffic; the OpenAI Python SDK works against all of it."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from harness import Stack, open_stack, parse_sse
from test_files_transcribe_realtime import file_turn
from test_privacy import dump_database, token_strings

from pooler.store import keys, pools

UNSUPPORTED = {
    "error": {
        "message": "Unsupported OpenAI /v1 endpoint",
        "type": "invalid_request_error",
        "code": "unsupported_endpoint",
        "param": None,
    }
}
TRANSCRIBE = "/v1/audio/transcriptions"


async def create_file(
    client: httpx.AsyncClient, data: bytes, name: str = "notes.txt", purpose: str = "user_data"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/files", files={"file": (name, data, "text/plain")}, data={"purpose": purpose}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def other_pool_key(stack: Stack) -> str:
    """A key of a second Pool (no accounts), once the gateway knows it."""

    def seed(conn: Any) -> str:
        pools.create_pool(conn, "other", actor="test")
        raw, _ = keys.create_key(conn, stack.config.secret_key, "other", "k", actor="test")
        return raw

    raw: str = await stack.database.run(seed)
    async with stack.client(headers={"Authorization": f"Bearer {raw}"}) as other:
        while (await other.get("/v1/files")).status_code == 401:
            await trio.sleep(0.05)
    return raw


async def test_a_file_lands_on_one_account_and_requests_naming_it_follow(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(45):
            created = [await create_file(client, b"file-%d" % i, f"f{i}.txt") for i in range(4)]
            first = created[0]
            assert first["object"] == "file" and first["status"] == "processed"
            assert (first["bytes"], first["filename"], first["purpose"]) == (
                6,
                "f0.txt",
                "user_data",
            )
            assert isinstance(first["created_at"], int)
            creators = {
                r["file_id"]: r["account_id"] for r in await stack.upstream_requests("/files")
            }
            assert len(set(creators.values())) > 1, "the files should land on several accounts"
            puts = [r for r in await stack.upstream_requests("") if r["method"] == "PUT"]
            finals = await stack.upstream_requests("/uploaded")
            for file in created:
                owner = creators[file["id"]]
                assert [r["account_id"] for r in puts if r["file_id"] == file["id"]] == [owner]
                assert [r["account_id"] for r in finals if r["file_id"] == file["id"]] == [owner]
                assert [r["body_bytes"] for r in puts if r["file_id"] == file["id"]] == [6]
            for file in reversed(created):
                response = await client.post(
                    "/backend-api/codex/responses", json=file_turn(file["id"])
                )
                assert parse_sse(response.text)[-1]["type"] == "response.completed"
                turn = (await stack.upstream_requests("/codex/responses"))[-1]
                assert turn["account_id"] == creators[file["id"]]

            listed = (await client.get("/v1/files")).json()
            assert listed["object"] == "list" and listed["has_more"] is False
            assert [f["id"] for f in listed["data"]] == [f["id"] for f in reversed(created)]
            page = (await client.get("/v1/files", params={"limit": 2, "order": "asc"})).json()
            assert [f["id"] for f in page["data"]] == [f["id"] for f in created[:2]]
            assert page["has_more"] is True
            after = await client.get("/v1/files", params={"order": "asc", "after": page["last_id"]})
            assert [f["id"] for f in after.json()["data"]] == [f["id"] for f in created[2:]]
            assert (await client.get(f"/v1/files/{first['id']}")).json() == first
            missing = await client.get("/v1/files/file_unknown")
            assert missing.status_code == 404
            assert missing.json()["error"]["type"] == "not_found_error"
            for method, path in (
                ("GET", f"/v1/files/{first['id']}/content"),
                ("DELETE", f"/v1/files/{first['id']}"),
            ):
                answer = await client.request(method, path)
                assert (answer.status_code, answer.json()) == (404, UNSUPPORTED)

            raw = await other_pool_key(stack)
            async with stack.client(headers={"Authorization": f"Bearer {raw}"}) as other:
                assert (await other.get(f"/v1/files/{first['id']}")).status_code == 404
                assert (await other.get("/v1/files")).json()["data"] == []
            unauthenticated = await httpx.AsyncClient(base_url=stack.url).get("/v1/files")
            assert unauthenticated.status_code == 401
            await stack.wait_for_logs(4 + 4 + 8)
        routes = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT route, count(*), count(account_id) FROM request_logs"
                " WHERE route = 'v1_files' GROUP BY route"
            ).fetchall()
        )
        assert routes[0][2] >= 4  # every create names its account


async def test_bad_uploads_are_400_naming_the_field(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            cases: list[tuple[dict[str, Any], str | None]] = [
                ({"data": {"purpose": "user_data"}, "files": {"other": ("a", b"x")}}, "other"),
                ({"data": {"purpose": "user_data"}}, None),
                ({"files": {"file": ("a.txt", b"x")}}, "purpose"),
                ({"data": {"purpose": "nope"}, "files": {"file": ("a.txt", b"x")}}, "purpose"),
            ]
            for kwargs, param in cases:
                answer = await client.post("/v1/files", **kwargs)
                if param is None:  # only form fields: httpx sends urlencoded, not multipart
                    assert answer.status_code == 415, answer.text
                    continue
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["param"] == param
            malformed = [
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nxx',
                b"no boundary at all",
                b"--b\r\nX: y\r\n\r\nxx\r\n--b--\r\n",
            ]
            for body in malformed:
                answer = await client.post(
                    "/v1/files",
                    content=body,
                    headers={"content-type": "multipart/form-data; boundary=b"},
                )
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["param"] == "file"
            no_file = await client.post(TRANSCRIBE, data={"model": "m"}, files={"x": ("a", b"1")})
            assert no_file.json()["error"]["param"] == "x"
            no_file = await client.post(
                TRANSCRIBE,
                content=b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
                b"--b--\r\n",
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
            assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")
            verbose = await client.post(
                TRANSCRIBE,
                files={"file": ("a.wav", b"RIFF", "audio/wav")},
                data={"model": "gpt-4o-transcribe", "response_format": "verbose_json"},
            )
            assert verbose.status_code == 400
            assert verbose.json()["error"]["code"] == "unsupported_parameter"
            assert verbose.json()["error"]["param"] == "response_format"
            assert await stack.upstream_requests("/files") == []
            assert await stack.upstream_requests("/transcribe") == []


async def test_transcription_json_and_text(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            audio = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
            answer = await client.post(
                TRANSCRIBE, files=audio, data={"model": "gpt-4o-transcribe", "language": "en"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["text"].startswith("emulated transcription")
            text = await client.post(
                TRANSCRIBE,
                files=audio,
                data={"model": "gpt-4o-transcribe", "response_format": "text", "prompt": "p"},
            )
            assert text.status_code == 200
            assert text.headers["content-type"].startswith("text/plain")
            assert text.text.startswith("emulated transcription")
            assert [r["status"] for r in await stack.upstream_requests("/transcribe")] == [200, 200]
            # Failover before the answer: the first account tried fails, another answers.
            for account in stack.emulator.accounts[:2]:
                await stack.fault(account.label, "server_error_500", times=1)
            again = await client.post(TRANSCRIBE, files=audio, data={"model": "m"})
            assert again.status_code == 200, again.text
            await stack.wait_for_logs(3)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT model, status_code, outcome FROM request_logs"
                " WHERE route = 'v1_transcriptions' ORDER BY created_at"
            ).fetchall()
        )
        assert rows[:2] == [("gpt-4o-transcribe", 200, "completed")] * 2


async def test_usage_counts_this_keys_traffic(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            before = (await client.get("/v1/usage")).json()
            assert before["object"] == "usage"
            assert before["usage"]["last_24h"]["requests"] == 0
            assert before["limits"]["rate_limit"]["allowed"] is True
            response = await client.post(
                "/v1/responses", json={"model": "gpt-5.5", "input": "Reply with exactly: ok"}
            )
            assert response.status_code == 200, response.text
            await create_file(client, b"x")
            await stack.wait_for_logs(3)
            after = await client.get("/v1/usage")
            assert after.headers["cache-control"] == "no-store"
            usage = after.json()
            day, month = usage["usage"]["last_24h"], usage["usage"]["last_30d"]
            assert day["requests"] == 3  # the first /v1/usage, /v1/responses, /v1/files
            assert day["total_tokens"] > 0 and day["input_tokens"] > 0
            assert month["requests"] == day["requests"]
            assert month["window_seconds"] == 30 * 24 * 3600
            assert usage["key"]["prefix"] and usage["pool"]["name"] == "demo"
            assert set(usage["limits"]) >= {"plan_type", "rate_limit", "credits"}


async def test_file_bytes_and_audio_are_never_stored_or_logged(
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
            file = await create_file(client, f"{marker}-file-bytes".encode())
            response = await client.post("/backend-api/codex/responses", json=file_turn(file["id"]))
            assert response.status_code == 200
            audio = {"file": ("a.wav", f"{marker}-audio".encode(), "audio/wav")}
            answer = await client.post(
                TRANSCRIBE, files=audio, data={"model": "m", "prompt": f"{marker}-prompt"}
            )
            assert answer.status_code == 200
            await stack.wait_for_logs(3)
            await stack.gateway.flush_write_behind()
        assert marker not in repr(list(stack.emulator.requests))
    tables = await trio.to_thread.run_sync(dump_database, db_url)
    assert "v1_files" in tables and file["id"] in tables["v1_files"]
    for table, text in tables.items():
        assert marker not in text, f"the marker is stored in {table}"
        assert marker.encode().hex() not in text, f"the marker is stored (bytea) in {table}"
        for secret in secrets:
            assert secret not in text, f"a raw key or token is stored in {table}"
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    assert caplog.records, "nothing was logged at all: the capture is not working"
    assert marker not in logs


def sdk_calls(stack: Stack) -> dict[str, Any]:
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key, max_retries=0)
    found: dict[str, Any] = {}
    created = sdk.files.create(file=("sdk.txt", b"hello from the sdk"), purpose="user_data")
    found["created"] = created
    found["retrieved"] = sdk.files.retrieve(created.id)
    found["listed"] = [f.id for f in sdk.files.list()]
    found["text"] = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"RIFF....WAVE", "audio/wav")
    ).text
    found["plain"] = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"RIFF", "audio/wav"), response_format="text"
    )
    try:
        sdk.files.content(created.id)
    except openai.NotFoundError as exc:
        found["content_error"] = exc.code
    return found


async def test_openai_sdk_files_and_transcriptions(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(60):
            found = await trio.to_thread.run_sync(sdk_calls, stack)
    created = found["created"]
    assert created.object == "file" and created.bytes == 18 and created.filename == "sdk.txt"
    assert found["retrieved"].id == created.id
    assert found["listed"] == [created.id]
    assert found["text"].startswith("emulated transcription")
    assert str(found["plain"]).startswith("emulated transcription")
    assert found["content_error"] == "unsupported_endpoint"
