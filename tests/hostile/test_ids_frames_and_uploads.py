"""Hostile bytes that used to reach the upstream: websocket frames the gateway could not
parse (relayed past the key's policy), file ids in the request target, and file names the
database cannot store. Each is refused in the client's protocol, nothing reaches the
emulator, the refusal is logged, and the next honest request still works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from harness import POOL, Stack, open_stack, responses_body
from scripted_resolver import scripted_resolver

from pooler.emulator.files import set_upload_origin
from pooler.store.keys import EffortPolicy, create_key
from pooler.upstream.http1 import UpstreamPool

DEADLINE = 30
FILES = "/backend-api/files"
PURPOSE = {"purpose": "user_data"}


async def new_key(stack: Stack, models: list[str] | None, effort: EffortPolicy | None) -> str:
    secret = stack.config.secret_key
    raw, _ = await stack.database.run(
        lambda conn: create_key(
            conn, secret, POOL, "hostile", allowed_models=models, effort=effort, actor="test"
        )
    )
    await stack.gateway.reload()
    return str(raw)


async def all_upstream_requests(stack: Stack) -> list[dict[str, Any]]:
    """Every request the emulator saw but the gateway's own model-catalog fetches."""
    found: list[dict[str, Any]] = (await stack.control("GET", "requests"))["requests"]
    return [r for r in found if not str(r["path"]).endswith("/models")]


async def log_rows(stack: Stack, transport: str) -> list[tuple[Any, ...]]:
    return list(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT status_code, outcome, error_code FROM request_logs"
                " WHERE transport = %s ORDER BY created_at",
                (transport,),
            ).fetchall()
        )
    )


async def raw_request(stack: Stack, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One request sent byte for byte (no client normalizes its target), and its answer."""
    host, _, port = stack.url.removeprefix("http://").partition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + body)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def post_head(stack: Stack, target: bytes, content_type: bytes, length: int) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + stack.key.encode() + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length
    )


# Frames orjson refuses (a more lenient parser upstream may not), frames that are not an
# object with a string type, and a response.create without a string model. Each asks for
# a model and an effort the key forbids.
FORBIDDEN = '"type":"response.create","model":"gpt-5.4","reasoning":{"effort":"xhigh"}'
UNREADABLE_FRAMES = [
    ("{" + FORBIDDEN + ',"temperature":NaN}', "invalid_json"),
    ("{" + FORBIDDEN + ',"temperature":Infinity}', "invalid_json"),
    ("{" + FORBIDDEN + ',"instructions":"\\ud800"}', "invalid_json"),
    ("{" + FORBIDDEN + ',"metadata":' + "[" * 1200 + "]" * 1200 + "}", "invalid_json"),
    ("[{" + FORBIDDEN + "}]", "invalid_json"),
    # Readable, but too deep for orjson to write back once the policy sets the effort.
    (
        '{"type":"response.create","model":"gpt-5.5","metadata":' + "[" * 300 + "]" * 300 + "}",
        "invalid_json",
    ),
    ('{"type":["response.create"],"model":"gpt-5.4"}', "invalid_request"),
    (
        '{"type":"response.create","model":["gpt-5.4"],"reasoning":{"effort":"xhigh"}}',
        "invalid_request",
    ),
]


@pytest.mark.parametrize("path", ["/backend-api/codex/responses", "/v1/responses"])
async def test_unreadable_websocket_frames_are_refused_in_band_and_logged(
    db_url: str, tmp_path: Path, path: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        key = await new_key(stack, ["gpt-5.5"], EffortPolicy("max", "low"))
        url = stack.url.replace("http://", "ws://") + path
        headers = [(b"authorization", f"Bearer {key}".encode())]
        with trio.fail_after(DEADLINE):
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                for frame, code in UNREADABLE_FRAMES:
                    await ws.send_message(frame)
                    refusal = json.loads(await ws.get_message())
                    assert refusal["type"] == "error" and refusal["status"] == 400, frame
                    assert refusal["error"]["code"] == code, frame
                # The socket still serves a turn the key allows.
                create = {"type": "response.create", **responses_body(model="gpt-5.5")}
                await ws.send_message(json.dumps(create))
                while (event := json.loads(await ws.get_message()))["type"] != "response.completed":
                    assert event["type"] != "error", event
            await stack.wait_for_logs(len(UNREADABLE_FRAMES) + 1)
        turns = [r for r in await stack.upstream_requests() if r["method"] != "GET"]
        assert len(turns) == 1  # only the allowed turn went upstream
        rows = await log_rows(stack, "websocket")
        refused = [r for r in rows if r[1] == "rejected"]
        assert len(refused) == len(UNREADABLE_FRAMES)
        assert [r[2] for r in refused][:6] == ["invalid_json"] * 6
        assert [r[1] for r in rows if r[1] != "rejected"] == ["completed"]
        del ws


HOSTILE_FILE_IDS = [
    b"x%3Fpurpose=evil&a=",  # `?` decoded: a query string upstream
    b"..",
    b"%2E%2E",
    b"x%2F..%2F..",  # encoded `/`
    b"a%20b",  # a space: an invalid request line upstream (was a 500)
    b"%C3%A9",  # non-ASCII (was a 500)
    b"x%23y",  # `#`
    b"x#y",
    b"x;y",
    b"x..y",
    b"file%00",  # NUL
    b"f" * 201,
]


async def test_hostile_file_ids_never_reach_the_upstream(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            for file_id in HOSTILE_FILE_IDS:
                target = FILES.encode() + b"/" + file_id + b"/uploaded"
                status, body = await raw_request(
                    stack, post_head(stack, target, b"application/json", 2), b"{}"
                )
                assert status == 400, (file_id, body)
                assert body["error"]["type"] == "invalid_request_error"
                assert body["error"]["code"] == "invalid_file_id"
                assert body["error"]["param"] == "file_id"
            for bad in ("%2E%2E", "a%20b", "x%00"):
                answer = await client.get(f"/v1/files/{bad}")
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["param"] == "file_id"
            answer = await client.get("/v1/files", params={"after": "x\x00"})
            assert answer.status_code == 400 and answer.json()["error"]["param"] == "after"
            answer = await client.get("/v1/files", params={"purpose": "x\x00"})
            assert answer.status_code == 400 and answer.json()["error"]["param"] == "purpose"
            assert await all_upstream_requests(stack) == []
            # An honest id still goes through.
            created = await client.post(
                FILES, json={"file_name": "a.txt", "file_size": 1, "use_case": "codex"}
            )
            file_id = created.json()["file_id"]
            done = await client.post(f"{FILES}/{file_id}/uploaded", json={})
            assert done.status_code == 200, done.text
            await stack.wait_for_logs(len(HOSTILE_FILE_IDS) + 7)
        paths = [r["path"] for r in await all_upstream_requests(stack)]
        assert paths == [FILES, f"{FILES}/{file_id}/uploaded"]


def multipart(filename: bytes, purpose: bytes = b"user_data") -> tuple[bytes, bytes]:
    """A form written byte for byte (HTTP clients escape control characters in names)."""
    boundary = b"hostile-boundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n"
        b"--" + boundary + b"--\r\n"
    )
    return body, b"multipart/form-data; boundary=" + boundary


async def test_a_file_name_the_database_cannot_store_is_refused_before_the_upstream(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            for name in (b"a\x00b.txt", b"a\x1b[31mb.txt", b"a\x7fb.txt", b"\xe2\x80\xaetxt.exe"):
                body, content_type = multipart(name)
                head = post_head(stack, b"/v1/files", content_type, len(body))
                status, answer = await raw_request(stack, head, body)
                assert status == 400, (name, answer)
                assert answer["error"]["param"] == "file", answer
            body, content_type = multipart(b"a.txt", purpose=b"user_data\x00")
            head = post_head(stack, b"/v1/files", content_type, len(body))
            status, answer = await raw_request(stack, head, body)
            assert status == 400 and answer["error"]["param"] == "purpose", answer
            assert await all_upstream_requests(stack) == []
            # An honest name is created, uploaded, finalized and recorded.
            body, content_type = multipart("résumé.txt".encode())
            head = post_head(stack, b"/v1/files", content_type, len(body))
            status, answer = await raw_request(stack, head, body)
            assert status == 200, answer
            assert answer["filename"] == "résumé.txt"
            await stack.wait_for_logs(6)
        rows = await log_rows(stack, "http")
        assert [r[0] for r in rows] == [400] * 5 + [200]


async def test_upload_urls_naming_local_addresses_are_never_connected_to(
    db_url: str, tmp_path: Path
) -> None:
    """A backend that hands out upload URLs on this machine (numeric forms the old check
    missed, a name resolving to loopback) gets no connection; its own origin still works."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        connected: list[object] = []

        async def accept() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    connected.append(stream)
                    await stream.aclose()

        files = {"file": ("a.txt", b"hello", "text/plain")}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            with trio.fail_after(DEADLINE), scripted_resolver({"blob.internal": ["127.0.0.1"]}):
                for host in (
                    "127.1",
                    "2130706433",
                    "0x7f000001",
                    "0177.0.0.1",
                    "blob.internal",
                    "localhost",
                ):
                    set_upload_origin(stack.emulator, f"https://{host}:{port}")
                    answer = await client.post("/v1/files", files=files, data=PURPOSE)
                    assert answer.status_code == 502, (host, answer.text)
                    assert answer.json()["error"]["code"] == "invalid_upload_url"
                set_upload_origin(stack.emulator, None)
                answer = await client.post("/v1/files", files=files, data=PURPOSE)
                assert answer.status_code == 200, answer.text
            nursery.cancel_scope.cancel()
        assert connected == []
        puts = [r for r in await all_upstream_requests(stack) if r["method"] == "PUT"]
        assert len(puts) == 1  # the honest upload only


async def test_the_blob_pool_connects_to_the_checked_address_under_the_urls_name() -> None:
    """No second lookup between the check and the connection: the pool is given the
    address, and the name only goes in the Host header (and TLS)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    heads: list[bytes] = []

    async def serve_once() -> None:
        async with listener:
            stream = await listener.accept()
            async with stream:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(4096)
                heads.append(head)
                await stream.send_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    with trio.fail_after(DEADLINE), scripted_resolver({}) as dns:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_once)
            pool = UpstreamPool(
                f"http://blob.never-resolved.example:{port}",
                max_connections=1,
                connect_to="127.0.0.1",
            )
            async with pool.request("PUT", "/c/b?sig=1", [], b"x") as response:
                assert response.status == 201
            await pool.aclose()
    assert dns.asked == []
    assert heads[0].startswith(b"PUT /c/b?sig=1 HTTP/1.1\r\n")
    assert f"host: blob.never-resolved.example:{port}".encode() in heads[0].lower()
