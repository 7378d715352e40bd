"""The emulator's files, transcription and realtime-calls routes (protocol §1.8, §1.9)."""

from __future__ import annotations

import hashlib

import httpx

from pooler.emulator import EmulatorState, FakeAccount
from pooler.emulator.app import build_emulator_app


def auth(account: FakeAccount) -> dict[str, str]:
    return {
        "authorization": f"Bearer {account.access_token}",
        "chatgpt-account-id": account.account_id,
    }


def client(state: EmulatorState) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_emulator_app(state))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://emu.test")


async def test_file_create_upload_finalize_on_the_creating_account_only() -> None:
    state = EmulatorState(accounts=2)
    first, second = state.accounts
    payload = b"secret-bytes-" * 100
    async with client(state) as http:
        created = await http.post(
            "/backend-api/files",
            json={"file_name": "a.txt", "file_size": len(payload), "use_case": "codex"},
            headers=auth(first),
        )
        assert created.status_code == 200
        file_id, upload_url = created.json()["file_id"], created.json()["upload_url"]
        assert file_id.startswith("file_") and upload_url.startswith("http://emu.test/")
        early = await http.post(
            f"/backend-api/files/{file_id}/uploaded", json={}, headers=auth(first)
        )
        assert early.json()["status"] == "error"
        put = await http.put(upload_url, content=payload, headers={"x-ms-blob-type": "BlockBlob"})
        assert put.status_code == 201
        bad_sig = await http.put(upload_url.split("?")[0] + "?sig=nope", content=b"x")
        assert bad_sig.status_code == 404
        other = await http.post(
            f"/backend-api/files/{file_id}/uploaded", json={}, headers=auth(second)
        )
        assert other.status_code == 404
        done = await http.post(
            f"/backend-api/files/{file_id}/uploaded", json={}, headers=auth(first)
        )
        assert done.status_code == 200
        assert done.json()["status"] == "success" and done.json()["file_name"] == "a.txt"
        unknown = await http.post(
            "/backend-api/files/file_x/uploaded", json={}, headers=auth(first)
        )
        assert unknown.status_code == 404
    upload = [r for r in state.requests if r["method"] == "PUT" and r["status"] == 201]
    assert upload[0]["body_bytes"] == len(payload)
    assert upload[0]["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert upload[0]["account_id"] == first.account_id
    assert all(b"secret-bytes" not in repr(r).encode() for r in state.requests)


async def test_transcribe_and_realtime_calls() -> None:
    state = EmulatorState(accounts=1)
    (account,) = state.accounts
    async with client(state) as http:
        files = {"file": ("a.wav", b"RIFF-audio-marker", "audio/wav")}
        answer = await http.post("/backend-api/transcribe", files=files, headers=auth(account))
        assert answer.status_code == 200 and answer.json()["text"].startswith("emulated")
        bad = await http.post("/backend-api/transcribe", json={}, headers=auth(account))
        assert bad.status_code == 400
        unauthenticated = await http.post("/backend-api/transcribe", files=files)
        assert unauthenticated.status_code == 401
        call = await http.post(
            "/backend-api/codex/realtime/calls",
            json={"sdp": "v=0", "session": {"type": "realtime"}},
            headers=auth(account),
        )
        assert call.status_code == 201
        assert call.headers["location"].rsplit("/", 1)[1].startswith("rtc_")
        assert call.headers["content-type"] == "application/sdp"
    assert all("audio-marker" not in repr(r) for r in state.requests)
