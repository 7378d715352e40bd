"""Request bodies from an authenticated but hostile client: a compression bomb, a body that
decodes past its cap, JSON nested past what the gateway can handle, and a body that never
finishes arriving. Each is answered in protocol with a bounded cost, is logged, and the next
honest request works."""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
import zstandard
from harness import Stack, open_stack, responses_body

ZSTD_JSON = {"content-type": "application/json", "content-encoding": "zstd"}
DEADLINE_S = 1.0
# Each honest request below is compressed with zstd, like the Codex CLI's.
HONEST_PATH = "/backend-api/codex/responses"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "param" in error
    assert "Traceback" not in response.text


async def honest(client: httpx.AsyncClient, text: str = "Reply with exactly: ok") -> None:
    body = zstandard.ZstdCompressor().compress(json.dumps(responses_body(text)).encode())
    answer = await client.post(HONEST_PATH, content=body, headers=ZSTD_JSON)
    assert answer.status_code == 200, answer.text
    assert '"type":"response.completed"' in answer.text.replace(" ", "")


async def logged(stack: Stack, count: int) -> list[tuple[int, str | None]]:
    await stack.wait_for_logs(count)
    rows = await stack.database.run(
        lambda conn: conn.execute("SELECT status_code, error_code FROM request_logs").fetchall()
    )
    return [(status, code) for status, code in rows]


def bomb(decoded_mib: int) -> bytes:
    """A Responses body whose input text is `decoded_mib` MiB of one letter: ~1 KB of zstd."""
    head = b'{"model":"gpt-5.5","stream":true,"input":"'
    text = head + b"a" * (decoded_mib * 1024 * 1024) + b'"}'
    return zstandard.ZstdCompressor(level=19).compress(text)


async def test_a_zstd_bomb_is_refused_before_it_decodes(db_url: str, tmp_path: Path) -> None:
    payload = bomb(20)  # 20 MiB of JSON from ~1 KB: far past 200:1, under the 64 MiB cap
    assert len(payload) < 4096
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(60):
            answers: list[httpx.Response] = []

            async def send_bomb() -> None:
                answers.append(await client.post(HONEST_PATH, content=payload, headers=ZSTD_JSON))

            tracemalloc.start()
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(send_bomb)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            for answer in answers:
                assert_error(answer, 413, "request_too_large")
                assert "200 times" in answer.json()["error"]["message"]
            # Ten bombs decoded would be 200 MiB; each stops at 200 times its ~1 KB.
            assert peak < 16 * 1024 * 1024, peak
            await honest(client)
            rows = await logged(stack, 11)
            assert rows.count((413, "request_too_large")) == 10 and (200, None) in rows


async def test_a_body_decoding_past_the_cap_is_413(db_url: str, tmp_path: Path) -> None:
    cap = 64 * 1024
    settings = {"usage_poll_interval_seconds": 86_400, "max_decompressed_body_bytes": cap}
    async with (
        open_stack(db_url, tmp_path, instance_settings=settings) as stack,
        stack.client() as client,
    ):
        with trio.fail_after(60):
            # Random hex compresses about 2:1, far under the ratio bound.
            text = os.urandom(cap).hex()
            raw = json.dumps(responses_body(text)).encode()
            body = zstandard.ZstdCompressor().compress(raw)
            assert len(raw) / len(body) < 5
            for path in (HONEST_PATH, "/v1/responses", "/v1/chat/completions"):
                answer = await client.post(path, content=body, headers=ZSTD_JSON)
                assert_error(answer, 413, "request_too_large")
                assert f"larger than {cap} bytes" in answer.json()["error"]["message"]
            await honest(client)
            rows = await logged(stack, 4)
            assert rows.count((413, "request_too_large")) == 3


def nested(depth: int) -> bytes:
    head = b'{"model":"gpt-5.5","input":"hi","stream":false,"metadata":'
    return head + b"[" * depth + b"]" * depth + b"}"


def deep_tool(depth: int, chat: bool) -> bytes:
    """A function tool whose parameters nest `depth` levels (forwarded as given)."""
    schema = b'{"type":"object","x":' + b"[" * depth + b"]" * depth + b"}"
    if chat:
        head = b'{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}],'
        tool = b'{"type":"function","function":{"name":"f","parameters":' + schema + b"}}"
    else:
        head = b'{"model":"gpt-5.5","input":"hi",'
        tool = b'{"type":"function","name":"f","parameters":' + schema + b"}"
    return head + b'"tools":[' + tool + b"]}"


async def test_deeply_nested_json_is_a_clean_400(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(60):
            for path, body in (
                (HONEST_PATH, nested(1100)),  # past orjson's 1,024 levels
                # orjson reads this but cannot write it back (the gateway rewrites a
                # non-streaming Codex body, and every /v1 body).
                (HONEST_PATH, nested(300)),
                ("/v1/responses", deep_tool(300, chat=False)),
                ("/v1/chat/completions", deep_tool(300, chat=True)),
                ("/v1/chat/completions", deep_tool(1100, chat=True)),
            ):
                answer = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert_error(answer, 400, "invalid_json")
            await honest(client)


class SlowBody:
    """A raw connection that sends a request's head and then its body a byte at a time."""

    def __init__(self, stack: Stack, path: str, content_type: str) -> None:
        self.stack, self.path, self.content_type = stack, path, content_type

    def head(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            "host: gateway",
            f"authorization: Bearer {self.stack.key}",
            f"content-type: {self.content_type}",
            "content-length: 100000",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def answer(self, *, on_started: trio.Event | None = None) -> tuple[int, dict[str, Any]]:
        """Drip the body until the gateway answers and closes; its status and JSON body."""
        url = urlsplit(self.stack.url)
        assert url.hostname is not None and url.port is not None
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        received = bytearray()
        async with stream, trio.open_nursery() as nursery:

            async def drip() -> None:
                await stream.send_all(self.head() + b"{")
                if on_started is not None:
                    on_started.set()
                while True:
                    await trio.sleep(0.25)
                    try:
                        await stream.send_all(b" ")
                    except trio.BrokenResourceError:
                        return

            nursery.start_soon(drip)
            while chunk := await stream.receive_some():
                received += chunk
            nursery.cancel_scope.cancel()
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert b"connection: close" in head.lower()
        return status, json.loads(body)


async def test_a_slow_body_holds_its_slot_until_its_deadline(db_url: str, tmp_path: Path) -> None:
    settings = {
        "usage_poll_interval_seconds": 86_400,
        "body_read_timeout_seconds": DEADLINE_S,
        "bulkheads": {"body": {"concurrency": 1, "queue": 0}},
    }
    async with (
        open_stack(db_url, tmp_path, instance_settings=settings) as stack,
        stack.client() as client,
    ):
        with trio.fail_after(30):
            slow = SlowBody(stack, HONEST_PATH, "application/json")
            started = trio.Event()
            outcome: list[tuple[int, dict[str, Any]]] = []

            async def hold() -> None:
                outcome.append(await slow.answer(on_started=started))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold)
                await started.wait()
                gate = stack.gateway.admission
                while gate.stats()["body"].in_flight == 0:
                    await trio.sleep(0.01)
                # The slow body holds the only slot: the next request is refused.
                refused = await client.post(HONEST_PATH, json=responses_body())
                assert_error(refused, 503, "server_is_overloaded")
            status, body = outcome[0]
            assert status == 408 and body["error"]["code"] == "request_timeout"
            assert stack.gateway.admission.stats()["body"].in_flight == 0
            await honest(client)
            rows = await logged(stack, 3)
            assert sorted(rows, key=str) == sorted(
                [(503, "server_is_overloaded"), (408, "request_timeout"), (200, None)], key=str
            )


async def test_every_body_route_times_out_a_slow_body(db_url: str, tmp_path: Path) -> None:
    settings = {"usage_poll_interval_seconds": 86_400, "body_read_timeout_seconds": DEADLINE_S}
    multipart = "multipart/form-data; boundary=xyz"
    routes = [
        (HONEST_PATH, "application/json"),
        ("/backend-api/codex/responses/compact", "application/json"),
        ("/v1/responses", "application/json"),
        ("/v1/chat/completions", "application/json"),
        ("/v1/images/edits", multipart),
        ("/v1/files", multipart),
        ("/v1/audio/transcriptions", multipart),
        ("/backend-api/files", "application/json"),
        ("/backend-api/transcribe", multipart),
    ]
    async with (
        open_stack(db_url, tmp_path, instance_settings=settings) as stack,
        stack.client() as client,
    ):
        with trio.fail_after(60):
            for path, content_type in routes:
                status, body = await SlowBody(stack, path, content_type).answer()
                assert (status, body["error"]["code"]) == (408, "request_timeout"), path
            assert all(s.in_flight == 0 for s in stack.gateway.admission.stats().values())
            await honest(client)
            rows = await logged(stack, len(routes) + 1)
            assert rows.count((408, "request_timeout")) == len(routes)


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_memory_taken_by_large_bodies_is_given_back(db_url: str, tmp_path: Path) -> None:
    """Honest bodies inside every bound, large enough to grow the heap: once they are done
    the gateway's trim pass gives the memory back (glibc kept it before)."""
    # Four letters at random: about 4:1 in zstd, inside the ratio and the 64 MiB caps.
    text = "".join(random.choices("abcd", k=24 * 1024 * 1024))
    body = zstandard.ZstdCompressor().compress(json.dumps(responses_body(text)).encode())
    del text
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(120):
            await honest(client)
            before = rss_bytes()

            async def send() -> None:
                answer = await client.post("/v1/responses", content=body, headers=ZSTD_JSON)
                assert answer.status_code == 200, answer.text[:200]

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(send)
            grown = rss_bytes()
            trimmer = stack.gateway.heap_trimmer
            assert trimmer.busy is not None
            while trimmer.busy():  # a trim waits for no request in flight (the log rows)
                await trio.sleep(0.01)
            await trimmer.run()
            after = rss_bytes()
            assert after < before + 64 * 1024 * 1024, (before, grown, after)
