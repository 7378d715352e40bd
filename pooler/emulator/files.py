"""Files, transcription and realtime calls of the fake backend (protocol §1.8, §1.9).

Uploaded bytes and audio are counted and hashed, then dropped: the request log keeps
sizes and digests only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import weakref
from dataclasses import dataclass

from pooler.emulator.asgi import (
    Receive,
    Scope,
    Send,
    query,
    read_body,
    request_headers,
    send_bytes,
    send_json,
    send_rejection,
)
from pooler.emulator.backend import COMPACT_FAULTS, _authenticate
from pooler.emulator.inbound import new_id
from pooler.emulator.rejections import bad_request, not_found
from pooler.emulator.state import EmulatorState, Grant

FILES_PATH = "/backend-api/files"
FILES_PREFIX = FILES_PATH + "/"
UPLOAD_PREFIX = "/emulator-blob/"
TRANSCRIBE_PATH = "/backend-api/transcribe"
REALTIME_CALLS_PATH = "/backend-api/codex/realtime/calls"
MAX_FILE_SIZE = 512 * 1024 * 1024


@dataclass
class FakeFile:
    file_id: str
    account_id: str
    file_name: str
    signature: str
    uploaded_bytes: int | None = None
    sha256: str | None = None


_FILES: weakref.WeakKeyDictionary[EmulatorState, dict[str, FakeFile]] = weakref.WeakKeyDictionary()


# The origin its upload URLs name, when a test plays a hostile backend (default: the Host
# the create request came to, where the emulator's blob store is).
_UPLOAD_ORIGINS: weakref.WeakKeyDictionary[EmulatorState, str] = weakref.WeakKeyDictionary()


def set_upload_origin(state: EmulatorState, origin: str | None) -> None:
    """Make file creation hand out upload URLs on `origin` (None: back to its own)."""
    if origin is None:
        _UPLOAD_ORIGINS.pop(state, None)
    else:
        _UPLOAD_ORIGINS[state] = origin


def files_of(state: EmulatorState) -> dict[str, FakeFile]:
    found = _FILES.get(state)
    if found is None:
        found = _FILES[state] = {}
    return found


def _note(state: EmulatorState, **extra: object) -> None:
    """Add counts and digests (never content) to the request-log entry just written."""
    if state.requests:
        state.requests[-1].update(extra)


async def _faulted(
    state: EmulatorState, grant: Grant, scope: Scope, send: Send, now: float
) -> bool:
    """Answer with a planned HTTP-status fault (429/500/401) if one is due."""
    fault = state.take_fault(grant.account, COMPACT_FAULTS)
    if fault is None:
        return False
    rejection = state.fault_rejection(fault, grant.account, now)
    assert rejection is not None
    path = scope["path"]
    state.record("POST", path, grant=grant, status=rejection.status, fault=fault.kind, now=now)
    await send_rejection(send, rejection)
    return True


async def _read_counted(receive: Receive) -> tuple[int, str] | None:
    """Size and SHA-256 of a body, reading it chunk by chunk without keeping it."""
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body", False):
            return size, digest.hexdigest()


async def handle_create(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    """`{file_name, file_size, use_case}` → `{file_id, upload_url}`."""
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    raw = await read_body(receive)
    if raw is None:
        return
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    name = body.get("file_name") if isinstance(body, dict) else None
    size = body.get("file_size") if isinstance(body, dict) else None
    if not isinstance(name, str) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
        state.record("POST", scope["path"], grant=grant, status=400, now=now)
        problem = bad_request("file_name (string) and file_size (0..512 MiB) are required")
        return await send_rejection(send, problem)
    if await _faulted(state, grant, scope, send, now):
        return
    file = FakeFile(new_id("file"), grant.account.account_id, name, secrets.token_hex(8))
    files_of(state)[file.file_id] = file
    state.record("POST", scope["path"], grant=grant, status=200, now=now)
    _note(state, file_id=file.file_id)
    host = request_headers(scope).get(b"host", "localhost")
    origin = _UPLOAD_ORIGINS.get(state, f"http://{host}")
    upload_url = f"{origin}{UPLOAD_PREFIX}{file.file_id}?sig={file.signature}"
    await send_json(send, 200, {"file_id": file.file_id, "upload_url": upload_url})


async def handle_upload(state: EmulatorState, scope: Scope, receive: Receive, send: Send) -> None:
    """The blob PUT: a signed URL, no account credentials; bytes counted, hashed, dropped."""
    now = time.time()
    file = files_of(state).get(scope["path"].removeprefix(UPLOAD_PREFIX))
    counted = await _read_counted(receive)
    if counted is None:
        return
    if file is None or query(scope).get("sig") != file.signature:
        state.record("PUT", scope["path"], status=404, now=now)
        return await send_rejection(send, not_found(scope["path"]))
    account = state.find_account(file.account_id)
    file.uploaded_bytes, file.sha256 = counted
    state.record("PUT", scope["path"], account=account, status=201, now=now)
    _note(state, file_id=file.file_id, body_bytes=counted[0], body_sha256=counted[1])
    await send_bytes(send, 201, b"", [])


async def handle_file_path(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    """`POST /backend-api/files/{id}/uploaded`: finalize, only on the creating account."""
    now = time.time()
    file_id, _, action = scope["path"].removeprefix(FILES_PREFIX).partition("/")
    if scope["method"] != "POST" or action != "uploaded":
        state.record(scope["method"], scope["path"], status=404, now=now)
        return await send_rejection(send, not_found(scope["path"]))
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    if await read_body(receive) is None:
        return
    if await _faulted(state, grant, scope, send, now):
        return
    file = files_of(state).get(file_id)
    if file is None or file.account_id != grant.account.account_id:
        state.record("POST", scope["path"], grant=grant, status=404, now=now)
        return await send_rejection(send, not_found(scope["path"]))
    state.record("POST", scope["path"], grant=grant, status=200, now=now)
    _note(state, file_id=file.file_id)
    done = file.uploaded_bytes is not None
    await send_json(
        send,
        200,
        {
            "status": "success" if done else "error",
            "download_url": f"https://files.emulator.invalid/{file.file_id}" if done else None,
            "file_name": file.file_name,
            "mime_type": "application/octet-stream",
            "error_message": None if done else "the file was not uploaded",
        },
    )


async def handle_transcribe(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    """Multipart with a `file` part → `{"text": ...}`; the audio is never kept."""
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    content_type = request_headers(scope).get(b"content-type", "")
    raw = await read_body(receive)
    if raw is None:
        return
    if not content_type.startswith("multipart/form-data") or b'name="file"' not in raw:
        state.record("POST", scope["path"], grant=grant, status=400, now=now)
        problem = bad_request("multipart/form-data with a 'file' part is required")
        return await send_rejection(send, problem)
    size, digest = len(raw), hashlib.sha256(raw).hexdigest()
    del raw
    if await _faulted(state, grant, scope, send, now):
        return
    state.record("POST", scope["path"], grant=grant, status=200, now=now)
    _note(state, body_bytes=size, body_sha256=digest)
    await send_json(send, 200, {"text": f"emulated transcription ({size} bytes)"})


async def handle_realtime_call(
    state: EmulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    """`{sdp, session}` → an answer SDP; the call id is the `Location`'s last segment."""
    now = time.time()
    grant = await _authenticate(state, scope, send, now)
    if grant is None:
        return
    counted = await _read_counted(receive)
    if counted is None:
        return
    if await _faulted(state, grant, scope, send, now):
        return
    call_id = new_id("rtc")
    state.record("POST", scope["path"], grant=grant, status=201, now=now)
    _note(state, call_id=call_id, body_bytes=counted[0])
    answer = f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns={call_id}\r\nt=0 0\r\n".encode()
    headers = [
        (b"content-type", b"application/sdp"),
        (b"location", f"/v1/realtime/calls/{call_id}".encode()),
    ]
    await send_bytes(send, 201, answer, headers)
