"""The console under a hostile client: a form body that never finishes, and a flood of
refused requests. Each is answered (an HTML page, never a hang), gives its `admin` slot
back, keeps no memory afterwards, and the next honest sign-in works."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

import trio
from console_support import bootstrap_owner, browser, sign_in
from harness import QUIET_POLLS, Stack, open_stack

DEADLINE_S = 0.5


async def drip_form(stack: Stack, path: str, head_lines: list[str]) -> bytes:
    """POST a form whose body comes a byte every 0.2 s; the whole answer (the gateway
    closes the connection after it)."""
    url = urlsplit(stack.url)
    assert url.hostname is not None and url.port is not None
    lines = [
        f"POST {path} HTTP/1.1",
        "host: localhost",
        "content-type: application/x-www-form-urlencoded",
        "content-length: 5000",
        *head_lines,
    ]
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    received = bytearray()
    async with stream, trio.open_nursery() as nursery:

        async def drip() -> None:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + b"csrf_token=")
            while True:
                await trio.sleep(0.2)
                try:
                    await stream.send_all(b"a")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

        nursery.start_soon(drip)
        while chunk := await stream.receive_some():
            received += chunk
        nursery.cancel_scope.cancel()
    return bytes(received)


async def test_a_slow_form_body_is_cut_at_the_deadline(db_url: str, tmp_path: Path) -> None:
    settings = {**QUIET_POLLS, "body_read_timeout_seconds": DEADLINE_S}
    async with (
        open_stack(db_url, tmp_path, instance_settings=settings) as stack,
        browser(stack) as client,
    ):
        assert (await bootstrap_owner(client)).status_code == 303
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        with trio.fail_after(20):
            for path, head in (("/login", []), ("/admin/pools", [f"cookie: {cookie}"])):
                answer = await drip_form(stack, path, head)
                status_line, _, rest = answer.partition(b"\r\n")
                assert status_line.split(b" ")[1] == b"408", (path, status_line)
                head_block = rest.partition(b"\r\n\r\n")[0].lower()
                assert b"content-type: text/html" in head_block
                assert b"connection: close" in head_block
            assert stack.gateway.admission.stats()["admin"].in_flight == 0
            pools = await client.get("/admin/pools")
            assert pools.status_code == 200
            async with browser(stack) as other:
                assert (await sign_in(other)).status_code == 303


async def test_a_flood_of_refused_console_requests_keeps_no_memory(
    db_url: str, tmp_path: Path
) -> None:
    """Forged session cookies (each a new one), forms without their token or too large,
    unknown pages, from clients without a session: every answer is a refusal, and once
    they are over the gateway holds no more Python memory than before (beyond a small
    allowance for caches that fill once)."""
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        assert (await bootstrap_owner(owner)).status_code == 303

        async def wave(n: int) -> None:
            statuses: set[int] = set()
            async with browser(stack) as client:
                for i in range(n):
                    forged = {"cookie": f"pooler_session=forged{i:06d}" + "x" * 40}
                    for answer in (
                        await client.get("/admin/upstreams", headers=forged),
                        await client.post("/login", data={"email": f"a{i}@example.com"}),
                        await client.post(
                            "/login", data={"csrf_token": "x" * 43, "x": "y" * 70_000}
                        ),
                        await client.get(f"/admin/upstreams/{i:08d}<b>"),
                    ):
                        statuses.add(answer.status_code)
            assert statuses <= {303, 403, 404, 413}, statuses

        with trio.fail_after(120):
            await wave(50)  # fills what fills once (templates, caches, pools)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(wave, 100)
                gc.collect()
                kept = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        print(f"kept {kept} bytes")
        # 1,600 refused requests; a leak of even 1 KiB each would be 1.6 MiB.
        assert kept < 512 * 1024, kept
        sessions = await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM console_sessions").fetchone()
        )
        assert sessions == (1,)  # the owner's: no refused request made one
        async with browser(stack) as person:
            assert (await sign_in(person)).status_code == 303
            assert (await person.get("/admin/pools")).status_code == 200
